import { type ReactNode, useEffect, useId, useState } from "react";
import { normaliseDate } from "../lib/searchState";

export interface DateRange {
  dateFrom: string;
  dateTo: string;
}

/**
 * Report date range (inclusive) as two native date inputs. A value is committed (`onChange`) when it is a
 * whole valid date or empty; while the user is still typing (a partial or out-of-range year) only the input's
 * own draft changes. A start after the end is shown as an error here; the page sends no search for it.
 */
export function DateRangeFilter({ value, onChange }: { value: DateRange; onChange: (next: DateRange) => void }) {
  const id = useId();
  const [from, setFrom] = useState(value.dateFrom);
  const [to, setTo] = useState(value.dateTo);
  useEffect(() => setFrom(value.dateFrom), [value.dateFrom]);
  useEffect(() => setTo(value.dateTo), [value.dateTo]);
  const inverted = Boolean(value.dateFrom && value.dateTo && value.dateFrom > value.dateTo);
  const errId = `${id}-err`;

  const edit = (which: keyof DateRange, raw: string) => {
    (which === "dateFrom" ? setFrom : setTo)(raw);
    const v = raw === "" ? "" : normaliseDate(raw);
    if (v !== null && v !== value[which]) onChange({ ...value, [which]: v });
  };

  return (
    <fieldset className="field date-range" aria-describedby={inverted ? errId : `${id}-hint`}>
      <legend className="visually-hidden">Report date</legend>
      <div className="date-range-inputs">
        <DateInput
          id={`${id}-from`}
          name="from"
          label="Reported from"
          value={from}
          max={value.dateTo}
          invalid={inverted}
          onEdit={(raw) => edit("dateFrom", raw)}
        />
        <DateInput
          id={`${id}-to`}
          name="to"
          label={
            <>
              <span className="visually-hidden">Reported </span>to
            </>
          }
          value={to}
          min={value.dateFrom}
          invalid={inverted}
          onEdit={(raw) => edit("dateTo", raw)}
        />
      </div>
      {inverted ? (
        <p id={errId} className="hint field-error" role="alert" data-testid="date-range-error">
          The start date ({value.dateFrom}) is after the end date ({value.dateTo}), so no search is sent.{" "}
          <button type="button" className="link" onClick={() => onChange({ dateFrom: value.dateTo, dateTo: value.dateFrom })}>
            Swap the dates
          </button>
        </p>
      ) : (
        <p id={`${id}-hint`} className="hint">
          The report's date, both ends included; leave one empty for an open range.
        </p>
      )}
    </fieldset>
  );
}

/** One end of the range: a native date input with its label; `min`/`max` bound it by the other end (when set). */
function DateInput(props: {
  id: string;
  name: string;
  label: ReactNode;
  value: string;
  min?: string;
  max?: string;
  invalid: boolean;
  onEdit: (raw: string) => void;
}) {
  return (
    <div>
      <label htmlFor={props.id}>{props.label}</label>
      <input
        id={props.id}
        type="date"
        name={props.name}
        value={props.value}
        min={props.min || undefined}
        max={props.max || undefined}
        aria-invalid={props.invalid ? true : undefined}
        onChange={(e) => props.onEdit(e.target.value)}
      />
    </div>
  );
}
