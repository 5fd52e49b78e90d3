"""Plain-text and JSON reporting shared by the commands and the library (imports nothing of ours).

- `format_rows`: score rows (`{"path", "score"}` / `{"path", "error"}`) as
  a table, CSV or JSON, the output of `predict` and of the serving client;
- `score_value`: a float32 score as printed everywhere (6 decimals);
- `summary_table`: aligned columns for small tables;
- `fmt_metric`: a metric as printed in tables (`nan` when undefined);
- `write_json`: an atomic JSON write (numpy values converted);
- `to_json`: strict JSON values (NaN and inf become None).
"""

import csv
import io
import json
import math
import os

import numpy as np


def score_value(value):
    """A float32 score as the float printed everywhere (6 decimals)."""
    return round(float(value), 6)


def format_rows(rows, fmt="table"):
    """Renders score rows as `"table"`, `"csv"` or `"json"` text.

    Args:
        rows: list of `{"path", "score"}` / `{"path", "error"}` dicts.
        fmt: str. `"table"` (aligned columns), `"csv"` (header
            `path,score,error`) or `"json"` (a list of the row dicts).
            Defaults to `"table"`.

    Returns:
        str, without a trailing newline.

    Example:
    >>> print(format_rows([{"path": "a.jpg", "score": 61.25}], "csv"))
    path,score,error
    a.jpg,61.250000,
    """
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score", "error"])
        for row in rows:
            writer.writerow([row["path"], f"{row['score']:.6f}" if "score" in row else "", row.get("error", "")])
        return buffer.getvalue().rstrip("\n")
    if fmt == "table":
        cells = [(row["path"], f"{row['score']:.4f}" if "score" in row else "ERROR: " + row["error"]) for row in rows]
        width = max([len("path")] + [len(p) for p, _ in cells])
        lines = [f"{'path':<{width}}  score", f"{'-' * width}  {'-' * 5}"]
        lines += [f"{p:<{width}}  {s}" for p, s in cells]
        return "\n".join(lines)
    raise ValueError(f"unknown format {fmt!r}; choose table, csv or json")


def summary_table(rows, headers):
    """Rows of cells as aligned text columns under `headers`."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def fmt_metric(value):
    """A metric as a table cell: 4 decimals, `nan` when undefined (None or NaN)."""
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def jsonable(value):
    """`json.dump`'s `default=`: numpy scalars and arrays as Python values, anything else as str."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path, payload):
    """Writes `payload` as indented JSON, atomically (written aside, then renamed)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=jsonable)
        handle.write("\n")
    os.replace(tmp, path)


def to_json(value):
    """Replaces NaN/inf floats by None and numpy types by Python ones, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
