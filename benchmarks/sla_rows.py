"""The rows of the SLA protocol's accuracy table: the run and the metric each reports.

One definition for `sla.py` (which summarises the runs), `plot_sla.py` (which draws
and tabulates them) and the tests that hold docs/sla.md to the results. Importing it
defines no flags.

Example:
>>> ROWS["SLA+AG"]
('sla', 'aggregated_accuracy')
>>> METHODS
('supervised', 'da', 'mt', 'sla')
>>> sorted(rows_of("sla"))
['SLA single', 'SLA+AG', 'SLA+SD']
"""

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
