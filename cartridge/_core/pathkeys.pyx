# cython: language_level=3
"""Path keys in C: a path that is already normal is recognised with one scan of its UTF-8
bytes, and its catalog key memoised; anything else (paths to collapse, bad paths and their
errors) goes to the reference normaliser, which cartridge.paths installs (its rules are the
reference)."""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.object cimport PyObject

cimport cartridge._core.layout as L
from cartridge._core.memo cimport Memo

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)

cdef enum:
    FILE_KEYS_MAX = 100000      # path -> (normalised path, key) entries memoised

cdef object _reference = None       # paths._normalize_ref: str -> (normalised, trailing)
cdef object _check_type = None      # paths._check_type: the argument checks and os.PathLike
cdef object _root_error = None      # paths._file_errors: raises for '/' and trailing '/'
cdef Memo _FILE_KEYS = Memo(FILE_KEYS_MAX)


def use_reference(reference, check_type, file_errors) -> None:
    """Install cartridge.paths' reference normaliser (rules and errors for every path that is
    not already normal)."""
    global _reference, _check_type, _root_error
    _reference = reference
    _check_type = check_type
    _root_error = file_errors
    _FILE_KEYS.clear()


cdef inline bint _is_normal(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Whether UTF-8 bytes already are a normal path: '/name' segments of 1..255 bytes, none
    '.' or '..', no C0/DEL/C1 control character, at most 4096 bytes in all (the root '/' and a
    trailing '/' are not: the reference handles them)."""
    cdef Py_ssize_t i, start = 1, ln
    cdef unsigned char c
    if n < 2 or n > L.MAX_PATH_BYTES or s[0] != 47:
        return False
    for i in range(1, n + 1):
        if i == n or s[i] == 47:
            ln = i - start
            if ln == 0 or ln > L.MAX_NAME_BYTES:
                return False
            if s[start] == 46 and (ln == 1 or (ln == 2 and s[start + 1] == 46)):
                return False
            start = i + 1
        else:
            c = s[i]
            if c < 0x20 or c == 0x7f:
                return False
            if c == 0xc2 and i + 1 < n and 0x80 <= s[i + 1] <= 0x9f:
                return False
    return True


cdef inline const unsigned char* _utf8(object path, Py_ssize_t* n):
    """UTF-8 bytes of an exact str, or NULL when it has none (a lone surrogate)."""
    if PyUnicode_IS_ASCII(path):
        n[0] = PyUnicode_GET_LENGTH(path)
        return <const unsigned char*>PyUnicode_DATA(path)
    try:
        return <const unsigned char*>PyUnicode_AsUTF8AndSize(path, n)
    except UnicodeEncodeError:
        return NULL


cdef inline bint _fast(object path) except -1:
    cdef Py_ssize_t n = 0
    cdef const unsigned char* s
    if type(path) is not str:
        return False
    s = _utf8(path, &n)
    return s != NULL and _is_normal(s, n)


def is_normal(path) -> bool:
    """Whether `path` is an exact str that is already a normal path (no work to do)."""
    return _fast(path)


def normalize_any(path) -> tuple:
    """(normalised path, whether it was written with a trailing '/')."""
    if _fast(path):
        return path, False
    return _reference(_check_type(path))


def normalize(path):
    """Normalise a path that may name a file or a directory."""
    if _fast(path):
        return path
    return _reference(_check_type(path))[0]


def normalize_file(path):
    """Normalise a path that must name a file: the root and a trailing '/' are refused."""
    if _fast(path):
        return path
    return _file_slow(path)


cdef object _file_slow(object path):
    result, trailing = _reference(_check_type(path))
    _root_error(path, result, trailing)
    return result


cpdef object normal_key(object path):
    """file_key(path) for an exact str that is already a normal path (memoised), else None
    (nothing raised: the caller goes the general way)."""
    cdef PyObject* hit
    cdef Py_ssize_t n = 0
    cdef const unsigned char* s
    cdef tuple out
    if type(path) is not str:
        return None
    hit = _FILE_KEYS.lookup(path)
    if hit != NULL:
        out = <tuple>hit
        return out if (<tuple>out)[0] is path or (<tuple>out)[0] == path else None
    s = _utf8(path, &n)
    if s == NULL or not _is_normal(s, n):
        return None
    out = (path, PyBytes_FromStringAndSize(<const char*>s, n))
    _FILE_KEYS.admit(path, out)
    return out


cpdef tuple file_key(object path):
    """(normalised file path, catalog key), memoised for str paths: the hot path of every read
    and write."""
    cdef PyObject* hit
    cdef Py_ssize_t n = 0
    cdef const unsigned char* s
    cdef tuple out
    if type(path) is not str:
        norm = normalize_file(path)
        return (norm, (<str>norm).encode("utf-8"))
    hit = _FILE_KEYS.lookup(path)
    if hit != NULL:
        return <tuple>hit
    s = _utf8(path, &n)
    if s != NULL and _is_normal(s, n):
        out = (path, PyBytes_FromStringAndSize(<const char*>s, n))
    else:
        norm = _file_slow(path)
        out = (norm, (<str>norm).encode("utf-8"))
    _FILE_KEYS.admit(path, out)
    return out


def path_key(path) -> tuple:
    """(normalised path, catalog key, written with a trailing '/') of a file or directory path;
    already-normal str paths share file_key's memo."""
    if _fast(path):
        norm, key = file_key(path)
        return norm, key, False
    norm, trailing = _reference(_check_type(path))
    return norm, (<str>norm).encode("utf-8"), trailing
