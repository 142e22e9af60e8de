"""The rows of the SLA protocol's accuracy table: the run and the metric each reports.

One definition for `sla.py` (which trains the runs), `plot_sla.py` (which draws
and tabulates them) and the tests that hold docs/sla.md to the results, with the
summary all three read: `summarise`. Importing it defines no flags.

Example:
>>> ROWS["SLA+AG"]
('sla', 'aggregated_accuracy')
>>> METHODS
('supervised', 'da', 'mt', 'sla')
>>> sorted(rows_of("sla"))
['SLA single', 'SLA+AG', 'SLA+SD']
"""

import numpy as np

# row -> (method, metric); the bars and the table list the rows in this order
ROWS = {"Supervised": ("supervised", "accuracy"), "DA": ("da", "accuracy"),
        "MT": ("mt", "accuracy"), "SLA single": ("sla", "single_accuracy"),
        "SLA+AG": ("sla", "aggregated_accuracy"),
        "SLA+SD": ("sla", "self_distill_accuracy")}


# the methods in the order of their first row (supervised, DA, MT, SLA)
METHODS = tuple(dict.fromkeys(method for method, _ in ROWS.values()))


def rows_of(method):
    """{row: metric} of one method's runs."""
    return {row: metric for row, (m, metric) in ROWS.items() if m == method}


def summarise(runs):
    """{size: {row: {mean, std, values[, gain_over_supervised, seed_gains]}}} of the runs.

    `runs` is {size: {seed: {method: {"metrics": {...}}}}} as the results JSON holds
    it. mean/std (ddof 0) are over the seeds the row has run for, in %. A gain over
    the supervised baseline is paired: per seed that has both runs (same images,
    initialisation and batch order), the row's accuracy minus the baseline's
    (`seed_gains`), and `gain_over_supervised` is their mean; a row with no such seed
    has no gain. With every seed run, the gain is the difference of the means.

    Example:
    >>> runs = {"2000": {"0": {"supervised": {"metrics": {"accuracy": 0.50}},
    ...                        "da": {"metrics": {"accuracy": 0.45}}},
    ...                  "1": {"supervised": {"metrics": {"accuracy": 0.60}}}}}
    >>> table = summarise(runs)["2000"]
    >>> round(table["Supervised"]["mean"], 6), round(table["DA"]["mean"], 6)
    (55.0, 45.0)
    >>> round(table["DA"]["gain_over_supervised"], 6)   # seed 0 only: 45 - 50
    -5.0
    """
    table = {}
    for size, by_seed in runs.items():
        by_row = {}   # row -> {seed: accuracy in %}
        for seed in sorted(by_seed, key=int):
            for method, run in by_seed[seed].items():
                for row, key in rows_of(method).items():
                    if key in run["metrics"]:
                        by_row.setdefault(row, {})[seed] = 100 * run["metrics"][key]
        table[size] = {}
        base = by_row.get("Supervised", {})
        for row in (r for r in ROWS if r in by_row):   # the table's order
            values = list(by_row[row].values())
            table[size][row] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                                "values": values}
            paired = {seed: value - base[seed]
                      for seed, value in by_row[row].items() if seed in base}
            if paired and row != "Supervised":
                table[size][row]["seed_gains"] = paired
                table[size][row]["gain_over_supervised"] = float(np.mean(list(paired.values())))
    return table
