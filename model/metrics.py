"""Task metrics as the field reports them (numpy only, from predictions and targets).

- :func:`classification_metrics`: overall accuracy, macro accuracy (mean per-class recall),
  F1 micro / macro, per-class F1;
- :func:`multilabel_metrics`: F1 micro / macro, subset (exact-match) accuracy;
- :func:`segmentation_metrics`: pixel (overall) accuracy, macro accuracy, mIoU, per-class IoU,
  F1 macro, from a confusion matrix (targets < 0 are ignored);
- :func:`regression_metrics`: RMSE, MAE, R² (NaN targets ignored).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(pred: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """``[k, k]`` counts (rows = truth); targets outside ``0..k-1`` are ignored."""
    p, t = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = (t >= 0) & (t < k)
    return np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k).astype(np.int64)


def _safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def from_confusion(cm: np.ndarray, classes: Sequence[str] | None = None) -> dict:
    """Overall/macro accuracy, F1 micro/macro, mIoU and per-class IoU/F1 of a confusion matrix.

    Classes absent from both truth and prediction are left out of the macro means.
    """
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    truth, pred = cm.sum(1), cm.sum(0)
    recall = _safe(tp, truth)
    f1 = _safe(2 * tp, truth + pred)
    iou = _safe(tp, truth + pred - tp)
    total = cm.sum()
    names = list(classes) if classes is not None else [str(i) for i in range(len(cm))]
    return {
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "macro_accuracy": float(np.nanmean(recall)) if np.isfinite(recall).any() else 0.0,
        "f1_micro": float(tp.sum() / total) if total else float("nan"),
        "f1_macro": float(np.nanmean(f1)) if np.isfinite(f1).any() else 0.0,
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "per_class_iou": {
            n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou, strict=True)
        },
        "per_class_f1": {
            n: (None if np.isnan(v) else float(v)) for n, v in zip(names, f1, strict=True)
        },
        "support": int(total),
    }


def classification_metrics(
    pred: np.ndarray, target: np.ndarray, k: int, classes: Sequence[str] | None = None
) -> dict:
    """Single-label chip classification (``pred``, ``target``: class indices ``[N]``)."""
    m = from_confusion(confusion(pred, target, k), classes)
    m.pop("miou")
    m.pop("per_class_iou")
    return m


def segmentation_metrics(cm: np.ndarray, classes: Sequence[str] | None = None) -> dict:
    """Segmentation metrics from an accumulated confusion matrix (see :func:`confusion`)."""
    m = from_confusion(cm, classes)
    m["pixel_accuracy"] = m.pop("f1_micro")
    return m


def multilabel_metrics(
    prob: np.ndarray,
    target: np.ndarray,
    threshold: float = 0.5,
    classes: Sequence[str] | None = None,
) -> dict:
    """Multi-label metrics from probabilities ``[N, K]`` and multi-hot targets ``[N, K]``."""
    p = np.asarray(prob) >= threshold
    t = np.asarray(target) >= 0.5
    tp = (p & t).sum(0).astype(np.float64)
    fp = (p & ~t).sum(0).astype(np.float64)
    fn = (~p & t).sum(0).astype(np.float64)
    f1 = _safe(2 * tp, 2 * tp + fp + fn)
    den = 2 * tp.sum() + fp.sum() + fn.sum()
    return {
        "f1_micro": float(2 * tp.sum() / den) if den else 0.0,
        "f1_macro": float(np.nanmean(f1)) if np.isfinite(f1).any() else 0.0,
        "subset_accuracy": float((p == t).all(1).mean()) if len(p) else float("nan"),
        "per_class_f1": {
            (classes[i] if classes else str(i)): (None if np.isnan(v) else float(v))
            for i, v in enumerate(f1)
        },
    }


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """RMSE, MAE and R² over finite targets."""
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    keep = np.isfinite(t) & np.isfinite(p)
    p, t = p[keep], t[keep]
    if not len(t):
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "support": 0}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "support": int(len(t)),
    }


#: the metric that picks the best epoch, per task (higher is better except rmse)
MAIN_METRIC = {
    "classify": "overall_accuracy",
    "multilabel": "f1_micro",
    "segment": "miou",
    "regress": "rmse",
    "regress-pixel": "rmse",
}
