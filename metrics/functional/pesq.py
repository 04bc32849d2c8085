"""PESQ through the ``pesq`` package (ludlows/python-pesq, the ITU-T reference C code).

* ``mode='wb'``: ITU-T P.862.2 wide-band, 16 kHz input, MOS-LQO in (0.999, 4.64].
* ``mode='nb'``: ITU-T P.862 narrow-band with the P.862.1 mapping, 8 kHz input, MOS-LQO in
  (0.999, 4.55]. (The logistic mappings approach 0.999 from above; raw scores are
  not clamped at -0.5, so values below 1.04 do occur on very noisy speech.)

PESQ aligns the two signals itself (it estimates and compensates delay, also varying delay), so
the signals may differ in length. The library normalises both by their common peak before
calling the C code; we pass the arrays through unchanged.
"""

from __future__ import annotations

import numpy as np

from speechqe.errors import MetricComputationError

#: The input rate of each mode.
MODE_RATES = {"wb": 16000, "nb": 8000}
#: The library refuses anything shorter (``BufferTooShortError``): 1/4 s of samples.
MIN_SECONDS = 0.25


def pesq(ref: np.ndarray, deg: np.ndarray, sample_rate: int, mode: str = "wb") -> float:
    """PESQ MOS-LQO of ``deg`` against ``ref``.

    Args:
        ref, deg: ``(samples,)`` float signals at ``sample_rate`` (any lengths >= 1/4 s).
        sample_rate: 16000 for ``'wb'``, 8000 (or 16000) for ``'nb'``.
        mode: ``'wb'`` or ``'nb'``.

    Raises:
        ValueError: bad mode or rate (a programming error, not an item error).
        MetricComputationError: the PESQ code rejected the input (no utterances detected,
            buffer too short, a degraded signal with no level, ...). Never returns 0 for that.
    """
    from pesq import PesqError
    from pesq import pesq as _pesq

    if mode not in MODE_RATES:
        raise ValueError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
    if sample_rate not in (8000, 16000) or (mode == "wb" and sample_rate != 16000):
        raise ValueError(f"PESQ {mode} cannot run at {sample_rate} Hz")
    try:
        value = _pesq(sample_rate, ref, deg, mode, on_error=PesqError.RAISE_EXCEPTION)
    except PesqError as exc:  # NoUtterancesError, BufferTooShortError, OutOfMemoryError, ...
        raise MetricComputationError(f"PESQ failed: {type(exc).__name__}: {_msg(exc)}") from exc
    except ValueError as exc:
        # The C code's result cannot be converted when the degraded signal carries no level
        # relative to the reference (e.g. all zeros after the common peak normalisation).
        raise MetricComputationError(f"PESQ failed: {_msg(exc)}") from exc
    value = float(value)
    if not np.isfinite(value):
        raise MetricComputationError(f"PESQ returned {value}")
    return value


def _msg(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else ""
    if isinstance(arg, bytes):
        arg = arg.decode(errors="replace")
    return str(arg) or type(exc).__name__
