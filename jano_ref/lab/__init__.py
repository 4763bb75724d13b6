"""The lab around the method core: the tiny models' data, training and cards (``tiny``), evaluation (``eval``),
plots and image writing, and the ``jano`` command. It may import the core; the core never imports it."""
