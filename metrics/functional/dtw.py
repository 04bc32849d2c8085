"""Dynamic time warping on a precomputed cost matrix.

Classic symmetric DTW (Sakoe & Chiba 1978 without a band): the path runs from ``(0, 0)`` to
``(N-1, M-1)`` with steps ``(1, 1)``, ``(0, 1)`` and ``(1, 0)``, each adding the cost of the
cell it enters with weight 1, so ``D[i, j] = C[i, j] + min(D[i-1, j-1], D[i, j-1], D[i-1, j])``.
This is ``librosa.sequence.dtw``'s default, and ties in the backtrace are broken in the same
order (diagonal, then ``(0, 1)``, then ``(1, 0)``); the tests check both agree.

Why our own: the recursion is filled one anti-diagonal at a time with numpy (all cells of an
anti-diagonal depend only on the two before it), so it needs neither numba's JIT (librosa's
first call compiles for seconds) nor librosa itself, which is not a core dependency, while
MCD and F0 are core metrics.
"""

from __future__ import annotations

import numpy as np


def accumulated_cost(cost: np.ndarray) -> np.ndarray:
    """The accumulated cost ``D`` of shape ``(N, M)`` (``D[-1, -1]`` is the path's total)."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"DTW needs a non-empty 2-D cost matrix, got shape {c.shape}")
    n, m = c.shape
    # Padded so that row/column -1 is +inf and the start cell sees 0.
    d = np.full((n + 1, m + 1), np.inf)
    d[0, 0] = 0.0
    for k in range(n + m - 1):
        i = np.arange(max(0, k - m + 1), min(n - 1, k) + 1)
        j = k - i
        best = np.minimum(np.minimum(d[i, j], d[i + 1, j]), d[i, j + 1])
        d[i + 1, j + 1] = c[i, j] + best
    return d[1:, 1:]


def backtrack(acc: np.ndarray) -> np.ndarray:
    """The optimal path through an accumulated cost matrix, ``(K, 2)`` int pairs ``(i, j)``
    from ``(0, 0)`` to ``(N-1, M-1)``."""
    n, m = acc.shape
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag, left, up = acc[i - 1, j - 1], acc[i, j - 1], acc[i - 1, j]
            if diag <= left and diag <= up:
                i, j = i - 1, j - 1
            elif left <= up:
                j -= 1
            else:
                i -= 1
        path.append((i, j))
    return np.asarray(path[::-1], dtype=np.int64)


def dtw(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Total cost and optimal path for the cost matrix ``cost`` of shape ``(N, M)``.

    Returns:
        ``(total, path)``: the summed cost along the path and the ``(K, 2)`` path.
    """
    acc = accumulated_cost(cost)
    return float(acc[-1, -1]), backtrack(acc)
