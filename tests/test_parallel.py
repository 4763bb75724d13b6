"""CFG-parallel and sequence-parallel generation (``jano_ref.runtime.parallel``) on CPU with gloo.

Each distributed test starts its ranks as fresh processes (forked from a clean forkserver that has imported this
module once, so a launch costs well under a second) with the environment torchrun would give them (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT on a free port), joins them with a timeout and kills what is left,
so a broken collective fails the test instead of hanging it. Ranks write what they measured to ``tmp_path``; the
test process compares. Every rank runs one thread, as under torchrun (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from jano_ref.generate import generate
from jano_ref.jano.config import get_preset
from jano_ref.runtime import parallel
from models import build_model
from models.layers import attention

from .helpers import flux_cfg_field, randomize_, rel_err, wan_field

TIMEOUT = timedelta(seconds=60)  # a collective waiting longer than this fails (and so does the test)
JOIN_SECONDS = 120  # the whole launch, imports included, on a busy 2-core machine

# Jano with short warm-up and intervals, so 8 steps see every step level (full, refresh, moderate, active)
SMALL_WAN = get_preset("wan").replace(warmup_steps=2, cooldown_steps=1, static_interval=3, medium_interval=2,
                                      block_size=(1, 2, 2))
SMALL_FLUX = get_preset("flux-dev").replace(warmup_steps=2, cooldown_steps=1, static_interval=3, medium_interval=2,
                                            block_size=(1, 2, 2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank: int, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fn(rank, *args)


def run_ranks(fn, world_size: int, *args) -> list[int]:
    """Run ``fn(rank, *args)`` on ``world_size`` ranks; their exit codes (None: killed after the timeout)."""
    ctx = mp.get_context("forkserver")  # one clean server imports this module once; ranks fork from it quickly
    ctx.set_forkserver_preload([__name__])
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world_size, port, args)) for r in range(world_size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_SECONDS
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes


# ---- the attention-op entry point of the models ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["flux-test", "wan-test"])
def test_a_caller_may_replace_the_attention_op_of_every_self_attention(name, one_thread_no_grad):
    torch.manual_seed(0)
    model = randomize_(build_model(name))
    calls = []

    def counting(q, k, v):
        calls.append(q.shape)
        return attention(q, k, v)

    def doubled(q, k, v):  # a different op must change the output: the argument is really used
        return 2 * attention(q, k, v)

    if name == "flux-test":
        img, txt = torch.randn(1, 16, 16), torch.randn(1, 5, 40)
        ids, tids = torch.zeros(16, 3), torch.zeros(5, 3)
        args = (img, ids, txt, tids, torch.tensor([0.5]), torch.randn(1, 24), torch.tensor([3.5]))
    else:
        args = (torch.randn(1, 4, 2, 4, 4), torch.tensor([500.0]), torch.randn(1, 3, 24))
    run = model if name == "flux-test" else model.forward_tokens
    plain = run(*args)
    assert torch.equal(run(*args, attention_op=counting), plain)
    assert len(calls) == model.num_attention_layers
    assert not torch.allclose(run(*args, attention_op=doubled), plain)


# ---- CFG-parallel: bit-identical to one process ----------------------------------------------------------------


def _tiny_wan(steps: int):
    from jano_ref.pipelines.tiny import load_model, prepare

    model = load_model("tiny-wan", random_weights=True)
    return prepare("tiny-wan", "a red circle moving left", steps=steps, seed=3, model=model)


def _cfg_rank(rank: int, out: Path) -> None:
    setup = _tiny_wan(steps=8)
    with parallel.distributed("cpu", timeout=TIMEOUT) as group:
        field = parallel.CFGParallel(setup.field, group)
        run = generate(field, setup.noise, setup.sigmas, method="jano", config=SMALL_WAN)
        result = dict(tokens=run.tokens, counts=run.report.token_counts, bytes=field.meter.per_step(),
                      cache=run.report.cache_bytes)
    if rank == 0:  # the single-process run, in the same process (same thread count)
        run = generate(setup.field, setup.noise, setup.sigmas, method="jano", config=SMALL_WAN)
        result.update(single=run.tokens, single_cache=run.report.cache_bytes)
    torch.save(result, out / f"rank{rank}.pt")


def test_cfg_parallel_tiny_wan_is_bit_identical_to_one_process(tmp_path):
    """Jano on tiny-wan over 8 steps: full (warm-up, cool-down), refresh, moderate and active steps."""
    assert run_ranks(_cfg_rank, 2, tmp_path) == [0, 0]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["tokens"], r0["single"])
    assert torch.equal(r1["tokens"], r0["single"])
    counts = r0["counts"]
    assert min(counts) < 1024 == max(counts)  # Jano really skipped tokens on some steps
    # per step each rank sends its branch's rows, [1, n, 48] float32, to the other rank
    assert r0["bytes"]["velocity"] == r1["bytes"]["velocity"] == pytest.approx(sum(counts) / len(counts) * 48 * 4)
    # each rank caches its own branch: together exactly what one process caches for both
    assert r0["cache"] == r1["cache"] and r0["cache"] + r1["cache"] == r0["single_cache"] > 0


# ---- sequence parallel: the tokens split over ranks ------------------------------------------------------------


def _seq_rank(rank: int, out: Path, which: str) -> None:
    make, config = {"wan": (wan_field, SMALL_WAN), "flux": (flux_cfg_field, SMALL_FLUX)}[which]
    with torch.no_grad():
        field, noise, sigmas = make()
    sigmas = sigmas[:: max(1, (len(sigmas) - 1) // 8)]  # about 8 steps
    results = {}
    with parallel.distributed("cpu", timeout=TIMEOUT) as group:
        split = parallel.SequenceParallel(field, group)
        for method in ("full", "jano"):
            computed = []  # the global token indices of each step (None: all)
            run = generate(split, noise, sigmas, method=method, config=config,
                           callback=lambda info, computed=computed: computed.append(info.get("computed")))
            results[method] = dict(tokens=run.tokens, counts=run.report.token_counts, steps=split.meter.steps[:],
                                   shard=split.token_shard, cache=getattr(run.report, "cache_bytes", 0),
                                   computed=computed)
            split.meter.reset()
    if rank == 0:
        for method in ("full", "jano"):
            run = generate(field, noise, sigmas, method=method, config=config)
            results[method].update(single=run.tokens, single_cache=getattr(run.report, "cache_bytes", 0))
    torch.save(results, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def seq_runs(tmp_path_factory):
    """Rank 0's and rank 1's results of ``_seq_rank`` on wan-test and on flux-test with guidance (one launch each)."""
    runs = {}
    for which in ("wan", "flux"):
        out = tmp_path_factory.mktemp(f"seq-{which}")
        assert run_ranks(_seq_rank, 2, out, which) == [0, 0]
        runs[which] = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    return runs


@pytest.mark.parametrize("which", ["wan", "flux"])
def test_sequence_parallel_matches_one_process(which, seq_runs):
    r0, r1 = seq_runs[which]
    for method in ("full", "jano"):
        single = r0[method]["single"]
        # keys arrive grouped by rank, not in one-process order: attention sums in another order, so the results
        # agree to float32 rounding, not bit for bit
        assert rel_err(r0[method]["tokens"], single) < 1e-5, method
        assert torch.equal(r0[method]["tokens"], r1[method]["tokens"]), method  # the ranks never drift apart
    counts = r0["jano"]["counts"]
    assert 0 < min(counts) < max(counts)  # Jano skipped tokens, so the shards' computed subsets differed
    # each rank caches its own shard: together exactly what one process caches
    assert r0["jano"]["cache"] + r1["jano"]["cache"] == r0["jano"]["single_cache"] > 0
    assert r0["jano"]["shard"][1] == r1["jano"]["shard"][0]


def test_sequence_parallel_bytes_per_step_match_the_formula(seq_runs):
    """wan-test (2 layers, dim 96 = 2 heads x 48, 16 channels), 2 ranks, 2 guidance branches, L = 48 tokens.

    Full step (24 tokens a rank): per layer and branch each rank sends half of its q, k and v ([1, 2, 24, 48]
    float32) and the other rank's half of the attention output, 16 bytes of lengths, and at the end its 24
    velocity rows. Any step with N computed tokens of L: rank r sends half of its n_r queries, half of the keys and
    values of its whole shard (fresh + cached) and the other rank's n_o output rows of its head group, so both
    ranks together send (N + L) x dim x 4 bytes per layer and branch, however unevenly N falls on the shards."""
    r0, r1 = seq_runs["wan"]
    layers, branches, dim, channels, shard = 2, 2, 96, 16, 24
    first = r0["full"]["steps"][0]
    assert first["attention"] == layers * branches * 4 * (shard * dim // 2) * 4
    assert first["lengths"] == layers * branches * 16
    assert first["velocity"] == shard * channels * 4
    for n, a, b in zip(r0["jano"]["counts"], r0["jano"]["steps"], r1["jano"]["steps"]):
        assert a["attention"] + b["attention"] == layers * branches * (n + 48) * dim * 4
    # ... and Jano did spread them unevenly: some step computed more tokens on one shard than on the other
    assert any(int((index < shard).sum()) != int((index >= shard).sum())
               for index in r0["jano"]["computed"] if index is not None)


def _seq_tiny_wan_rank(rank: int, out: Path) -> None:
    setup = _tiny_wan(steps=8)
    with parallel.distributed("cpu", timeout=TIMEOUT) as group:
        split = parallel.SequenceParallel(setup.field, group)
        run = generate(split, setup.noise, setup.sigmas, method="jano", config=SMALL_WAN)
        result = dict(tokens=run.tokens, counts=run.report.token_counts, bytes=split.meter.per_step())
    if rank == 0:
        result["single"] = generate(setup.field, setup.noise, setup.sigmas, method="jano", config=SMALL_WAN).tokens
    torch.save(result, out / f"rank{rank}.pt")


@pytest.mark.slow  # about 5 s more than the 2-rank tests (four ranks on two cores); run by .ci/run
def test_sequence_parallel_on_four_ranks_tiny_wan(tmp_path):
    """tiny-wan's 4 heads over 4 ranks (one head each, 256 tokens a rank), Jano over 8 steps."""
    assert run_ranks(_seq_tiny_wan_rank, 4, tmp_path) == [0, 0, 0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(4)]
    assert rel_err(ranks[0]["tokens"], ranks[0]["single"]) < 1e-5  # as above: key order differs, rounding only
    assert all(torch.equal(r["tokens"], ranks[0]["tokens"]) for r in ranks[1:])
    assert min(ranks[0]["counts"]) < 1024


# ---- the command: --parallel, reliability ----------------------------------------------------------------------


def _cli_rank(rank: int, out: Path, extra: list[str], fail_at: int | None = None, how: str = "raise") -> None:
    from jano_ref.lab import cli

    if fail_at is not None and rank == 1:  # this rank raises (or is killed) when its branch is asked for step fail_at
        real = cli.prepare

        def failing(*a, **k):
            setup = real(*a, **k)
            branch_velocity, calls = setup.field.branch_velocity, [0]

            def fail_at_step(*a, **k):
                calls[0] += 1
                if calls[0] > fail_at and how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if calls[0] > fail_at:
                    raise RuntimeError(f"injected failure at step {fail_at}")
                return branch_velocity(*a, **k)

            setup.field.branch_velocity = fail_at_step
            return setup

        cli.prepare = failing
    argv = ["generate", "a red circle moving left", "--model", "tiny-wan", "--random-weights", "--steps", "4",
            "--warmup", "0", "--repeats", "1", "--out", str(out / "out"), "--dist-timeout", "60", *extra]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        (out / f"rank{rank}.err").write_text(str(exit_.code))
        raise
    (out / f"rank{rank}.ok").write_text(str(code))


def test_cli_cfg_writes_only_on_rank_0_and_matches_one_process(tmp_path, one_thread_no_grad):
    from jano_ref.lab.cli import main

    assert run_ranks(_cli_rank, 2, tmp_path, ["--parallel", "cfg", "--method", "full"]) == [0, 0]
    assert (tmp_path / "rank0.ok").exists() and (tmp_path / "rank1.ok").exists()
    single = tmp_path / "single"
    main(["generate", "a red circle moving left", "--model", "tiny-wan", "--random-weights", "--steps", "4",
          "--warmup", "0", "--repeats", "1", "--method", "full", "--out", str(single)])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())
    for path in single.glob("full*"):  # the GIF and every frame, byte for byte (the latents are bit-identical)
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parallel"]["mode"] == "cfg" and summary["parallel"]["world_size"] == 2
    names = [Path(f).name for f in json.loads((single / "summary.json").read_text())["files"]]
    assert summary["files"] == [str(out / name) for name in names]  # the final paths, not the staging folder's
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job_with_a_message_and_no_results(how, tmp_path):
    codes = run_ranks(_cli_rank, 2, tmp_path, ["--parallel", "cfg", "--method", "full"], 2, how)
    assert codes[0] == 1 and codes[1] not in (0, None)  # both ended, neither hung
    message = (tmp_path / "rank0.err").read_text()
    assert "another rank raised, was killed or timed out" in message and "no results were written" in message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ranks_with_different_settings_are_refused_at_start(tmp_path):
    codes = run_ranks(_mismatch_rank, 2, tmp_path)
    assert codes == [1, 1]
    for r in range(2):
        message = (tmp_path / f"rank{r}.err").read_text()
        assert "steps: rank 0 has 4, rank 1 has 6" in message
    assert not (tmp_path / "out").exists()


def _mismatch_rank(rank: int, out: Path) -> None:
    _cli_rank(rank, out, ["--parallel", "cfg", "--steps", "4" if rank == 0 else "6"])


@pytest.mark.slow  # torchrun itself: its agent and two fresh interpreters, about 15 s; run by .ci/run
@pytest.mark.parametrize("mode", ["cfg", "seq"])
def test_torchrun_runs_the_command(mode, tmp_path):
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "jano_ref",
               "generate", "a red circle moving left", "--model", "tiny-wan", "--random-weights", "--steps", "4",
               "--warmup", "0", "--repeats", "1", "--parallel", mode, "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("payload bytes each rank sent per step") == 1  # rank 0 alone reports
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["parallel"]["mode"] == mode and len(summary["parallel"]["bytes_per_step"]["jano"]) == 2


# ---- refusals and the staged output folder (no process group needed) ------------------------------------------


def test_the_modes_refuse_what_they_cannot_split():
    cpu = torch.device("cpu")
    with torch.no_grad():
        wan, _, _ = wan_field()  # guided, 2 heads
    with pytest.raises(ValueError, match="exactly 2 ranks"):
        parallel.CFGParallel(wan, parallel.Group(0, 3, cpu))
    unguided = type(wan)(wan.model, wan.context, None, wan.latent_fhw)
    with pytest.raises(ValueError, match="branches \\('cond',\\)"):
        parallel.CFGParallel(unguided, parallel.Group(0, 2, cpu))
    with pytest.raises(ValueError, match="2 attention heads"):
        parallel.SequenceParallel(wan, parallel.Group(0, 4, cpu))
    assert parallel.SequenceParallel(wan, parallel.Group(1, 2, cpu)).token_shard == (24, 48)


def test_parallel_without_torchrun_says_how_to_launch(monkeypatch):
    from jano_ref.lab.cli import main

    for key in parallel.TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SystemExit, match="launch with torchrun"):
        main(["generate", "a red circle", "--model", "tiny-wan", "--random-weights", "--parallel", "cfg"])
    with pytest.raises(SystemExit, match="runs --method full or jano"):
        main(["generate", "a red circle", "--random-weights", "--parallel", "seq", "--method", "teacache"])


def test_a_staged_folder_publishes_only_on_success(tmp_path):
    from jano_ref.lab.imageio import staged_folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("kept")
    with pytest.raises(RuntimeError), staged_folder(out) as stage:
        (stage / "half.png").write_bytes(b"x")
        raise RuntimeError("stopped part-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no stage left behind
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    with staged_folder(out) as stage:
        (stage / "a.png").write_bytes(b"a")
        (stage / "summary.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "old.txt", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
