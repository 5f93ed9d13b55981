"""A small bridge to R through rpy2: availability checks, SingleCellExperiment building, calls and conversion.

R starts lazily, on the first function here that needs it, so importing vulnbench never starts R. Objects
handed to R are built on rpy2's low level (`rpy2.rinterface`) so that a dense matrix is copied once, in
R's column-major order; results come back as numpy / pandas through `to_python`, never as rpy2 proxies
(callers may pickle what they keep).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vulnbench.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: R packages that Debian 12 ships, and their Debian package names
DEBIAN_PACKAGES = {
    "SingleR": "r-bioc-singler",
    "SingleCellExperiment": "r-bioc-singlecellexperiment",
    "SummarizedExperiment": "r-bioc-summarizedexperiment",
    "S4Vectors": "r-bioc-s4vectors",
    "DelayedArray": "r-bioc-delayedarray",
    "BiocParallel": "r-bioc-biocparallel",
    "scuttle": "r-bioc-scuttle",
    "scran": "r-bioc-scran",
    "Matrix": "r-cran-matrix",
    "Seurat": "r-cran-seurat",
    "openxlsx": "r-cran-openxlsx",
    "dplyr": "r-cran-dplyr",
    "caret": "r-cran-caret",
    "kernlab": "r-cran-kernlab",
    "e1071": "r-cran-e1071",
    "AnnotationHub": "r-bioc-annotationhub",
}

#: R's NA_integer_ (and logical NA) as seen through the buffer interface
_R_NA_INT = np.iinfo(np.int32).min

# R helpers, my own code, evaluated once in a private environment
_HELPERS = {
    "installed": "function(pkgs) vapply(pkgs, function(p) suppressWarnings(suppressMessages("
                 "requireNamespace(p, quietly = TRUE))), logical(1))",
    "sparse": "function(i, p, x, nrow, ncol) Matrix::sparseMatrix(i = i, p = p, x = x, dims = c(nrow, ncol), "
              "index1 = FALSE, repr = 'C')",
    "sce": "function(m, assay, coldata) { assays <- stats::setNames(list(m), assay); "
           "if (is.null(coldata)) SingleCellExperiment::SingleCellExperiment(assays = assays) "
           "else SingleCellExperiment::SingleCellExperiment(assays = assays, "
           "colData = S4Vectors::DataFrame(coldata, check.names = FALSE)) }",
    "is_dframe": "function(x) methods::is(x, 'DataFrame')",
    "dframe": "function(x) list(rownames = rownames(x), columns = as.list(x))",
    "set_dimnames": "function(x, rows, cols) { dimnames(x) <- list(rows, cols); x }",
    "source_into": "function(path) { env <- new.env(parent = globalenv()); sys.source(path, envir = env); env }",
    "get_in": "function(env, name) get(name, envir = env, inherits = FALSE)",
}


# -- availability -----------------------------------------------------------------------------------
@cache
def r_available() -> tuple[bool, str]:
    """(True, "") when rpy2 imports and R initialises; else (False, why). Starts R on first call."""
    try:
        import rpy2.rinterface as ri
    except ImportError as exc:
        return False, f"rpy2 is not installed ({exc}); install vulnbench[r]"
    try:
        ri.initr_simple()
        import rpy2.robjects  # noqa: F401  (initialises the high-level layer too)
    except Exception as exc:  # rpy2 raises various errors when libR is missing or broken
        return False, f"R could not be initialised through rpy2: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    from rpy2.rinterface_lib import callbacks

    # R's console output (messages, errors already raised as exceptions) goes to logging, not the terminal
    callbacks.consolewrite_warnerror = lambda text: log.debug("R: %s", text.rstrip())
    callbacks.consolewrite_print = lambda text: log.debug("R: %s", text.rstrip())
    return True, ""


def _rinterface() -> ModuleType:
    """rpy2.rinterface with R running, or a one-line ConfigError."""
    ok, reason = r_available()
    if not ok:
        raise ConfigError(f"R is not usable: {reason}")
    import rpy2.rinterface as ri

    return ri


def _helper(name: str) -> Any:
    return evaluate(_HELPERS[name])


def missing_r_packages(*names: str) -> list[str]:
    """The R packages among `names` that cannot be loaded (empty when all can)."""
    ri = _rinterface()
    if not names:
        return []
    loaded = _helper("installed")(ri.StrSexpVector(list(names)))
    return [n for n, ok in zip(names, loaded, strict=True) if not ok]


def install_hint(names: Sequence[str]) -> str:
    """How to install R packages: apt for those Debian packages, BiocManager for the rest."""
    debian = [DEBIAN_PACKAGES[n] for n in names if n in DEBIAN_PACKAGES]
    other = [n for n in names if n not in DEBIAN_PACKAGES]
    hints = []
    if debian:
        hints.append(f"apt-get install {' '.join(debian)}")
    if other:
        quoted = ", ".join(f'"{n}"' for n in other)
        hints.append(f"R -e 'BiocManager::install(c({quoted}))'")
    return " and ".join(hints)


def require_r_packages(*names: str) -> None:
    """Raise a one-line ConfigError naming what is missing (R itself or R packages) and how to install it."""
    ok, reason = r_available()
    if not ok:
        hint = install_hint(names)
        raise ConfigError(f"R is not usable ({reason}); needed for R packages {', '.join(names)}"
                          + (f" (install R and then: {hint})" if hint else ""))
    missing = missing_r_packages(*names)
    if missing:
        raise ConfigError(f"R package(s) {', '.join(missing)} not installed: {install_hint(missing)}")


# -- Python -> R --------------------------------------------------------------------------------------
def set_seed(seed: int | None) -> None:
    """R's `set.seed`, so that anything random on the R side is reproducible."""
    if seed is not None:
        ri = _rinterface()
        ri.baseenv["set.seed"](ri.IntSexpVector([int(seed)]))


def r_matrix(values: np.ndarray, rownames: Sequence[str] | None = None,
             colnames: Sequence[str] | None = None) -> Any:
    """A numeric R matrix with dimnames from a 2-D array (one copy; none more when already Fortran float64)."""
    ri = _rinterface()
    values = np.asarray(values)
    if values.ndim != 2:
        raise DataError(f"r_matrix needs a 2-D array, got {values.ndim}-D")
    if values.dtype.kind == "b":
        vector = ri.BoolSexpVector(values.ravel(order="F").tolist())
    else:
        flat = np.asfortranarray(values, dtype=np.float64).ravel(order="F")  # a view when already Fortran
        vector = (ri.FloatSexpVector.from_memoryview(memoryview(flat)) if flat.size  # R copies the buffer
                  else ri.FloatSexpVector([]))
    vector.do_slot_assign("dim", ri.IntSexpVector(list(values.shape)))
    if rownames is not None or colnames is not None:
        vector.do_slot_assign("dimnames", ri.ListSexpVector([_names(rownames), _names(colnames)]))
    return vector


def _names(names: Sequence[str] | None) -> Any:
    ri = _rinterface()
    return ri.NULL if names is None else ri.StrSexpVector([str(n) for n in names])


def to_r(obj: Any) -> Any:
    """Python → R under a numpy + pandas conversion context; 2-D arrays keep their shape, None is NULL."""
    ri = _rinterface()
    if obj is None:
        return ri.NULL
    if isinstance(obj, ri.Sexp):
        return obj
    if isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.dtype.kind in "fiub":
        return r_matrix(obj)
    if isinstance(obj, np.ndarray) and obj.ndim == 1:
        if obj.dtype.kind in "UOS":
            return ri.StrSexpVector([None if v is None else str(v) for v in obj])
        if obj.dtype.kind == "b":
            return ri.BoolSexpVector(obj.tolist())
        if obj.dtype.kind in "iu" and (obj.size == 0 or np.abs(obj).max() < 2**31 - 1):
            return ri.IntSexpVector(obj.astype(np.int64).tolist())
        return ri.FloatSexpVector(np.asarray(obj, dtype=np.float64).tolist())
    if isinstance(obj, pd.Series):
        vector = to_r(obj.to_numpy())
        vector.do_slot_assign("names", ri.StrSexpVector(obj.index.astype(str).tolist()))
        return vector
    if isinstance(obj, dict):
        listed = ri.ListSexpVector([to_r(v) for v in obj.values()])
        listed.do_slot_assign("names", ri.StrSexpVector([str(k) for k in obj]))
        return listed
    if isinstance(obj, list | tuple) and obj and all(isinstance(v, str) for v in obj):
        return ri.StrSexpVector(list(obj))
    from rpy2.robjects import default_converter, numpy2ri, pandas2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(default_converter + numpy2ri.converter + pandas2ri.converter) as converter:
        return converter.py2rpy(obj)


def to_sce(matrix: np.ndarray | sp.spmatrix | sp.sparray, genes: Sequence[str], cells: Sequence[str],
           assay: str = "logcounts", coldata: pd.DataFrame | None = None) -> Any:
    """A SingleCellExperiment (genes × cells, with dimnames) from a cells × genes matrix.

    Dense input is handed over as the Fortran-ordered genes × cells transpose (one copy, no reordering in R);
    sparse input becomes a dgCMatrix (the CSR cells × genes layout is exactly R's CSC genes × cells).
    """
    require_r_packages("SingleCellExperiment")
    n_cells, n_genes = matrix.shape
    if len(genes) != n_genes or len(cells) != n_cells:
        raise DataError(f"to_sce: matrix is {n_cells} cells × {n_genes} genes but got {len(cells)} cell and "
                        f"{len(genes)} gene names")
    if coldata is not None and len(coldata) != n_cells:
        raise DataError(f"to_sce: coldata has {len(coldata)} rows for {n_cells} cells")
    if sp.issparse(matrix):
        r_assay = _sparse_to_r(matrix, genes, cells)
    else:
        # transpose of a C-ordered cells × genes array is already Fortran-ordered genes × cells
        r_assay = r_matrix(np.asarray(matrix, dtype=np.float64).T, genes, cells)
    r_coldata = _rinterface().NULL
    if coldata is not None:
        frame = coldata.copy()
        frame.index = pd.Index([str(c) for c in cells])
        r_coldata = to_r(frame)
    return _helper("sce")(r_assay, _rinterface().StrSexpVector([assay]), r_coldata)


def _sparse_to_r(matrix: Any, genes: Sequence[str], cells: Sequence[str]) -> Any:
    ri = _rinterface()
    if missing_r_packages("Matrix"):
        log.warning("R package Matrix is not installed: densifying a %d × %d sparse matrix for R", *matrix.shape)
        return r_matrix(np.asarray(matrix.toarray(), dtype=np.float64).T, genes, cells)
    csr = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    csr.sum_duplicates()
    csr.sort_indices()
    n_cells, n_genes = csr.shape
    built = _helper("sparse")(
        ri.IntSexpVector(csr.indices.astype(np.int32).tolist()),
        ri.IntSexpVector(csr.indptr.astype(np.int32).tolist()),
        ri.FloatSexpVector.from_memoryview(memoryview(np.ascontiguousarray(csr.data))),
        ri.IntSexpVector([n_genes]), ri.IntSexpVector([n_cells]),
    )
    return _helper("set_dimnames")(built, _names(genes), _names(cells))


# -- calls ----------------------------------------------------------------------------------------------
@cache
def evaluate(code: str) -> Any:
    """An R object (typically a function) from R code of vulnbench's own, evaluated once."""
    return _rinterface().evalr(code)


def r_function(function_name: str) -> Any:
    """An R function by name; "pkg::name" looks inside a package namespace."""
    ri = _rinterface()
    try:
        function = ri.evalr(function_name)
    except Exception as exc:
        raise ConfigError(f"R function {function_name!r} not found: {str(exc).strip().splitlines()[-1]}") from None
    if not isinstance(function, ri.SexpClosure):
        raise ConfigError(f"{function_name!r} is not an R function")
    return function


def call_r(function_name: str, *args: Any, _raw: bool = False, _seed: int | None = None, **kwargs: Any) -> Any:
    """Call an R function with Python arguments (converted by `to_r`); the result goes through `to_python`.

    Keyword names are passed verbatim, so R's dotted names go as `**{"de.method": "classic"}`. `_seed` calls
    `set.seed` first; `_raw=True` returns the rpy2 object unconverted (for chaining R calls).
    """
    function = r_function(function_name)
    set_seed(_seed)
    return call_function(function, *args, _raw=_raw, _label=function_name, **kwargs)


def source_file(path: str, function_name: str) -> Any:
    """`function_name` from an R file sourced into a private environment (e.g. scType's `sctype_score_.R`).

    Sourced once per file version (path, size, mtime): repeated scoring calls do not re-parse the file.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"R file {path} cannot be read: {exc.strerror}") from None
    return _sourced(str(path), function_name, stat.st_size, stat.st_mtime_ns)


@cache
def _sourced(path: str, function_name: str, _size: int, _mtime: int) -> Any:
    ri = _rinterface()
    from rpy2.rinterface_lib.embedded import RRuntimeError

    try:
        env = _helper("source_into")(ri.StrSexpVector([str(path)]))
        function = _helper("get_in")(env, ri.StrSexpVector([function_name]))
    except RRuntimeError as exc:
        raise ConfigError(f"cannot take {function_name} from R file {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(function, ri.SexpClosure):
        raise ConfigError(f"{function_name} in R file {path} is not a function")
    return function


def call_function(function: Any, *args: Any, _raw: bool = False, _label: str = "", **kwargs: Any) -> Any:
    """Call an R function object (from `source_file` or `r_function`) with Python arguments, as `call_r`."""
    ri = _rinterface()
    from rpy2.rinterface_lib.embedded import RRuntimeError

    r_args = tuple([(None, to_r(a)) for a in args] + [(k, to_r(v)) for k, v in kwargs.items()])
    try:
        result = function.rcall(r_args, ri.globalenv)
    except RRuntimeError as exc:
        raise DataError(f"R call {_label or 'to an R function'} failed: {' '.join(str(exc).split())}") from None
    return result if _raw else to_python(result)


def serialize(obj: Any) -> bytes:
    """An R object as bytes (R's `serialize`), so that a Python model can keep (and pickle) a trained R model."""
    return bytes(call_r("serialize", obj, None, _raw=True))


def unserialize(data: bytes) -> Any:
    """The R object back from `serialize`."""
    ri = _rinterface()
    return call_r("unserialize", ri.ByteSexpVector(data), _raw=True)


# -- R -> Python ----------------------------------------------------------------------------------------
def to_python(obj: Any) -> Any:
    """R → Python: NULL → None; atomic vectors → ndarray (named → Series, matrix → ndarray or DataFrame when
    it has dimnames); factors → strings; data.frame / S4 DataFrame → pandas DataFrame (a matrix column M
    becomes columns "M.<colname>", as R's `as.data.frame`); lists → dict (all named) or list.

    NA becomes None in character vectors and NaN in numbers; other R objects are returned unchanged.
    """
    ri = _rinterface()
    if obj is ri.NULL or obj is None:
        return None
    if isinstance(obj, ri.SexpS4):
        return _columns_to_frame(*_dframe_parts(obj)) if _is_dframe(obj) else obj
    if isinstance(obj, ri.ListSexpVector):
        classes = list(obj.rclass)
        if "data.frame" in classes:
            names = list(_attr(obj, "names") or [])
            columns = {n: to_python(obj[i]) for i, n in enumerate(names)}
            row_names = obj.do_slot("row.names")  # automatic row names come back as integers
            index = [str(r) for r in row_names] if isinstance(row_names, ri.StrSexpVector) else None
            return _columns_to_frame(index, columns)
        items = [to_python(v) for v in obj]
        names = _attr(obj, "names")
        if names is not None and all(n not in ("", None) for n in names) and len(set(names)) == len(items):
            return dict(zip(names, items, strict=True))
        return items
    if isinstance(obj, ri.FloatSexpVector | ri.IntSexpVector | ri.BoolSexpVector | ri.StrSexpVector):
        return _atomic(obj)
    return obj


def dframe_columns(obj: Any) -> dict[str, Any]:
    """The columns of an R data.frame / S4 DataFrame, each converted on its own (matrix columns stay whole)."""
    return _dframe_parts(obj)[1]


def _dframe_parts(obj: Any) -> tuple[list[str] | None, dict[str, Any]]:
    parts = _helper("dframe")(obj)
    rownames = parts[0]
    columns = parts[1]
    names = _attr(columns, "names") or []
    index = None if rownames is _rinterface().NULL else [str(r) for r in rownames]
    return index, {n: to_python(columns[i]) for i, n in enumerate(names)}


def _is_dframe(obj: Any) -> bool:
    return bool(_helper("is_dframe")(obj)[0])


def _columns_to_frame(index: list[str] | None, columns: dict[str, Any]) -> pd.DataFrame:
    flat: dict[str, Any] = {}
    for name, value in columns.items():
        if isinstance(value, pd.DataFrame):
            for sub in value.columns:
                flat[f"{name}.{sub}"] = value[sub].to_numpy()
        elif isinstance(value, np.ndarray) and value.ndim == 2:
            for j in range(value.shape[1]):
                flat[f"{name}.{j + 1}"] = value[:, j]
        elif isinstance(value, pd.Series):
            flat[name] = value.to_numpy()
        else:
            flat[name] = value
    return pd.DataFrame(flat, index=index)


def _attr(obj: Any, name: str) -> list[Any] | None:
    try:
        value = obj.do_slot(name)
    except LookupError:
        return None
    if value is _rinterface().NULL:
        return None
    return list(value)


def _atomic(obj: Any) -> Any:
    ri = _rinterface()
    values: np.ndarray
    if isinstance(obj, ri.StrSexpVector):
        values = np.array([None if v is ri.NA_Character else str(v) for v in obj], dtype=object)
    elif isinstance(obj, ri.FloatSexpVector):
        values = np.array(obj, dtype=np.float64, copy=True)
    else:  # integer or logical: NA is INT_MIN through the buffer
        raw = np.array(obj, dtype=np.int32, copy=True)
        na = raw == _R_NA_INT
        if "factor" in list(obj.rclass):
            levels = np.array([str(v) for v in _attr(obj, "levels") or []], dtype=object)
            values = np.empty(raw.shape, dtype=object)
            values[~na] = levels[raw[~na] - 1]
            values[na] = None
        elif isinstance(obj, ri.BoolSexpVector):
            values = raw.astype(bool) if not na.any() else np.where(na, None, raw.astype(bool)).astype(object)
        else:
            values = raw if not na.any() else np.where(na, np.nan, raw.astype(np.float64))
    dim = _attr(obj, "dim")
    if dim is not None and len(dim) >= 2:
        values = values.reshape(tuple(int(d) for d in dim), order="F")
        dimnames = _attr(obj, "dimnames")
        if len(dim) == 2 and dimnames is not None and any(d is not ri.NULL for d in dimnames):
            rows, cols = (None if d is ri.NULL else [str(v) for v in d] for d in dimnames)
            return pd.DataFrame(values, index=rows, columns=cols)
        return values
    names = _attr(obj, "names")
    if names is not None:
        return pd.Series(values, index=[str(n) for n in names])
    return values
