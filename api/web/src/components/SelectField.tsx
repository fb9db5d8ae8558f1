type Choice = string | number;

/** The <option>s of plain choices (each its own value and label). */
export function Options({ choices }: { choices: readonly Choice[] }) {
  return choices.map((c) => (
    <option key={c} value={c}>
      {c}
    </option>
  ));
}

/** A labelled <select> of plain choices, optionally led by an "any" choice (the empty value). */
export function SelectField(props: {
  id: string;
  label: string;
  value: Choice;
  choices: readonly Choice[];
  anyLabel?: string;
  onChange: (value: string) => void;
}) {
  const { id, label, value, choices, anyLabel, onChange } = props;
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onChange(e.target.value)}>
        {anyLabel !== undefined && <option value="">{anyLabel}</option>}
        <Options choices={choices} />
      </select>
    </div>
  );
}
