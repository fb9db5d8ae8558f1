import { useEffect, useId, useState } from "react";
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
        <div>
          <label htmlFor={`${id}-from`}>Reported from</label>
          <input
            id={`${id}-from`}
            type="date"
            name="from"
            value={from}
            max={value.dateTo || undefined}
            aria-invalid={inverted ? true : undefined}
            onChange={(e) => edit("dateFrom", e.target.value)}
          />
        </div>
        <div>
          <label htmlFor={`${id}-to`}>
            <span className="visually-hidden">Reported </span>to
          </label>
          <input
            id={`${id}-to`}
            type="date"
            name="to"
            value={to}
            min={value.dateFrom || undefined}
            aria-invalid={inverted ? true : undefined}
            onChange={(e) => edit("dateTo", e.target.value)}
          />
        </div>
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
