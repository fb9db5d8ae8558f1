/** A labelled <select> of plain choices, optionally led by an "any" choice (the empty value). */
export function SelectField({
  id,
  label,
  value,
  choices,
  anyLabel,
  onChange,
}: {
  id: string;
  label: string;
  value: string | number;
  choices: readonly (string | number)[];
  anyLabel?: string;
  onChange: (value: string) => void;
}) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onChange(e.target.value)}>
        {anyLabel !== undefined && <option value="">{anyLabel}</option>}
        {choices.map((c) => (
          <option key={c} value={c}>
            {c}
          </option>
        ))}
      </select>
    </div>
  );
}
