"""The book's chapters: each family's runs, claims catalogue, tables and figures.

* chapters 3-5: ``experiments`` (the runs), ``chapter``, ``paper_claims``;
* chapters 7-8: ``variants`` (designs), ``variants_chapter``, ``variants_claims``, ``variants_stats``,
  ``variants_figures``, ``variants_quadratics``;
* chapter 9: ``stochastic``, ``stochastic_claims``;
* the benchmark appendix: ``benchmark_measure`` (measures), ``benchmark_report``, ``benchmark_summary``,
  ``benchmark_plots`` (read the stored files).

May import every layer; the modules that only read (claims, tables, figures) load neither torch nor the engine.
"""
