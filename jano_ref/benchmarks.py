"""``python -m jano_ref.benchmarks ...``: the micro-benchmarks' command; the code is in ``jano_ref.lab.eval.benchmarks``."""

if __name__ == "__main__":
    from .lab.eval.benchmarks import main

    main()
