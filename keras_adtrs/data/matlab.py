"""Reading MATLAB `.mat` files of the IQA releases (scipy only)."""

import numpy as np
import scipy.io


def loadmat(path, *names):
    """Variables `names` of a MATLAB file (`scipy.io.loadmat`), each flattened to 1-D.

    Args:
        path: a file path, or an object with `.open("rb")` (`etils.epath.Path`).
        *names: str. Variable names.

    Raises:
        KeyError: a variable is missing (the message names the file and what it holds).
    """
    if hasattr(path, "open"):
        with path.open("rb") as handle:
            content = scipy.io.loadmat(handle)
    else:
        content = scipy.io.loadmat(path)
    out = []
    for name in names:
        if name not in content:
            found = sorted(k for k in content if not k.startswith("__"))
            raise KeyError(f"{path}: variable {name!r} not found (found: {found})")
        out.append(np.asarray(content[name]).reshape(-1))
    return out


def mat_strings(array):
    """A MATLAB cell array of strings (as loaded by scipy) -> list of str."""
    out = []
    for item in np.asarray(array, dtype=object).reshape(-1):
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.reshape(-1)[0]
        if isinstance(item, np.ndarray):
            item = "".join(np.asarray(item).reshape(-1).tolist())
        out.append(str(item).strip())
    return out
