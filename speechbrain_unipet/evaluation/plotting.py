"""Figures of an evaluation (matplotlib, optional: the ``[plot]`` extra;
without it each function raises an ImportError with the install command).

* ``plot_det``: DET curve with the EER and minDCF points;
* ``plot_score_histogram``: target / non-target score distributions;
* ``plot_layer_weights``: learned softmax weights per hidden state (one set,
  or several as grouped bars, e.g. MHFA's keys and values);
* ``plot_gates``: UniPET-SPK's mean gate per branch and layer (0 to 1);
* ``plot_conditions``: EER % and minDCF per robustness condition
  (``speechbrain_unipet.conditions``).

Figures are written with the Agg backend (no display needed).

Authors
 * speechbrain-unipet contributors 2026
"""

import numpy as np

from speechbrain_unipet.scoring.metrics import det_curve, eer, min_dcf


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


def _vector(values, what):
    """A 1-D float array of ``values`` (lists, numpy or torch tensors, on
    any device), with an error naming ``what`` otherwise."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{what}: expected a non-empty 1-D sequence, got shape "
            f"{array.shape}"
        )
    return array


def _bars(ax, series, labels):
    """Grouped bars of equal-length series (dict name -> values)."""
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(
            x + (k - (len(series) - 1) / 2) * width, values, width, label=name
        )
    ax.set_xticks(x, labels)


def plot_layer_weights(weights, path, title=None):
    """Saves the learned per-layer weights as bars (layer 0 = the CNN
    output, then each Transformer layer).

    Arguments
    ---------
    weights : array_like or dict
        Softmax weights [L+1] (list, numpy or torch), or name -> weights of
        equal length for several sets drawn as grouped bars (e.g. MHFA's
        key and value weights).
    path : str or pathlib.Path
        The image to write.
    title : str, optional
        Plot title.

    Raises
    ------
    ValueError
        For an empty dict, a set that is not 1-D, or sets of different
        lengths.

    Example
    -------
    >>> out = getfixture("tmp_path") / "layers.png"
    >>> plot_layer_weights(np.full(13, 1 / 13), out)
    >>> out.stat().st_size > 1000
    True
    >>> plot_layer_weights(
    ...     {"keys": [0.2, 0.5, 0.3], "values": [0.6, 0.2, 0.2]}, out
    ... )
    >>> out.stat().st_size > 1000
    True
    """
    if not isinstance(weights, dict):
        weights = {"layer weights": weights}
    if not weights:
        raise ValueError("no layer weights to plot (empty dict)")
    series = {k: _vector(v, f"layer weights {k!r}") for k, v in weights.items()}
    plt = _pyplot()
    sizes = {v.size for v in series.values()}
    if len(sizes) != 1:
        raise ValueError(f"layer weight sets differ in length: {sorted(sizes)}")
    layers = [str(i) for i in range(sizes.pop())]
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(layers)), 3.5))
    _bars(ax, series, layers)
    ax.set_xlabel("hidden state (0 = CNN output)")
    ax.set_ylabel("weight")
    if len(series) > 1:
        ax.legend()
    ax.set_title(title or "learned layer weights")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_gates(gates, path, title=None):
    """Saves UniPET-SPK's mean gate per branch and layer (lines, 0 to 1).

    Arguments
    ---------
    gates : dict
        Branch name -> 1-D mean gate values per layer, in [0, 1] (list,
        numpy or torch); branches may cover different numbers of layers.
    path : str or pathlib.Path
        The image to write.
    title : str, optional
        Plot title.

    Raises
    ------
    ValueError
        For an empty dict or values that are not 1-D.

    Example
    -------
    >>> out = getfixture("tmp_path") / "gates.png"
    >>> plot_gates(
    ...     {"inner_adapter": [0.4, 0.6], "deep_prompt": [0.5, 0.3]}, out
    ... )
    >>> out.stat().st_size > 1000
    True
    """
    if not gates:
        raise ValueError("no gate values to plot (only unipet has gates)")
    series = {k: _vector(v, f"gates {k!r}") for k, v in gates.items()}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in series.items():
        ax.plot(np.arange(values.size), values, marker="o", label=name)
    ax.set_ylim(0, 1)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("layer (inter adapters: hidden state)")
    ax.set_ylabel("mean gate")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "UniPET gates (mean over utterances)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_conditions(rows, path, title=None):
    """Saves EER and minDCF per robustness condition as bars.

    Arguments
    ---------
    rows : list of dict
        ``condition``, ``eer`` (fraction) and ``min_dcf`` each (as written
        by ``evaluation.write_condition_report``; other keys are ignored).
    path : str or pathlib.Path
        The image to write.
    title : str, optional
        Plot title.

    Raises
    ------
    ValueError
        For no rows or a row without one of the three keys.

    Example
    -------
    >>> out = getfixture("tmp_path") / "conditions.png"
    >>> rows = [
    ...     {"condition": "clean", "eer": 0.02, "min_dcf": 0.2},
    ...     {"condition": "noise_0dB", "eer": 0.1, "min_dcf": 0.5},
    ... ]
    >>> plot_conditions(rows, out)
    >>> out.stat().st_size > 1000
    True
    """
    if not rows:
        raise ValueError("no condition rows to plot")
    missing = [
        (k, r.get("condition", i))
        for i, r in enumerate(rows)
        for k in ("condition", "eer", "min_dcf")
        if k not in r
    ]
    if missing:
        raise ValueError(
            f"condition rows need condition, eer and min_dcf; missing "
            f"{missing[0][0]!r} in row {missing[0][1]!r}"
        )
    plt = _pyplot()
    names = [str(r["condition"]) for r in rows]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(max(7, 1.3 * len(names)), 3.8)
    )
    bars = left.bar(names, [100 * r["eer"] for r in rows], color="tab:blue")
    left.bar_label(bars, fmt="%.1f", fontsize=8)
    left.set_ylabel("EER (%)")
    bars = right.bar(names, [r["min_dcf"] for r in rows], color="tab:orange")
    right.bar_label(bars, fmt="%.3f", fontsize=8)
    right.set_ylabel("minDCF (0.01)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=45)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "verification under robustness conditions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
