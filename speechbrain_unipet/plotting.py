"""DET curves, score histograms and layer/gate plots (matplotlib, optional).

Authors
 * speechbrain-unipet contributors 2026
"""

import numpy as np

from speechbrain_unipet.metrics import det_curve, eer, min_dcf


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "Plots need matplotlib: pip install 'speechbrain-unipet[plot]' "
            "(or pip install matplotlib)"
        ) from err
    return plt


def _probit(p):
    from scipy.special import ndtri

    return ndtri(np.clip(p, 1e-6, 1 - 1e-6))


def plot_det(positive_scores, negative_scores, path, p_target=0.01, title=None):
    """Saves a DET curve (normal-deviate axes) with the EER and minDCF points.

    Arguments
    ---------
    positive_scores : array_like
        Scores of target (same-speaker) trials.
    negative_scores : array_like
        Scores of non-target trials.
    path : str or pathlib.Path
        The image to write (format from the suffix, e.g. ``.png``).
    p_target : float
        Target prior of the minDCF point.
    title : str, optional
        Plot title.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> out = getfixture("tmp_path") / "det.png"
    >>> plot_det(rng.normal(1, 1, 200), rng.normal(-1, 1, 2000), out)
    >>> out.stat().st_size > 1000
    True
    """
    plt = _pyplot()
    p_miss, p_fa, thresholds = det_curve(positive_scores, negative_scores)
    e, e_th = eer(positive_scores, negative_scores)
    d, d_th = min_dcf(positive_scores, negative_scores, p_target=p_target)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(_probit(p_fa), _probit(p_miss), lw=1.5, label="DET")
    for th, marker, label in (
        (e_th, "o", f"EER {100 * e:.2f} %"),
        (d_th, "s", f"minDCF({p_target}) {d:.3f}"),
    ):
        k = int(np.searchsorted(thresholds, th))
        ax.plot(_probit(p_fa[k]), _probit(p_miss[k]), marker, label=label)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(_probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(_probit(ticks), [f"{100 * t:g}" for t in ticks])
    lim = _probit(np.array([5e-4, 0.99]))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title(title or "DET curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_score_histogram(positive_scores, negative_scores, path, title=None):
    """Saves target / non-target score histograms.

    Arguments
    ---------
    positive_scores : array_like
        Scores of target (same-speaker) trials.
    negative_scores : array_like
        Scores of non-target trials.
    path : str or pathlib.Path
        The image to write (format from the suffix, e.g. ``.png``).
    title : str, optional
        Plot title.

    Example
    -------
    >>> out = getfixture("tmp_path") / "hist.png"
    >>> plot_score_histogram([0.9, 0.7, 0.8], [0.1, 0.3, 0.2], out)
    >>> out.stat().st_size > 1000
    True
    """
    plt = _pyplot()
    pos = np.asarray(positive_scores, dtype=float)
    neg = np.asarray(negative_scores, dtype=float)
    bins = np.linspace(min(pos.min(), neg.min()), max(pos.max(), neg.max()), 60)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(
        neg,
        bins=bins,
        alpha=0.6,
        density=True,
        label=f"non-target ({neg.size})",
    )
    ax.hist(
        pos, bins=bins, alpha=0.6, density=True, label=f"target ({pos.size})"
    )
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend()
    ax.set_title(title or "score distributions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
