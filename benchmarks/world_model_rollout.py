"""Time world-model rollouts with the KV cache against recomputing the whole history every step.

    python benchmarks/world_model_rollout.py --threads 1   # CPU, defaults below; prints a Markdown table
    python benchmarks/world_model_rollout.py --device cuda

Both paths run the same rollouts (same seed, a uniform random policy, so the policy costs nothing) from the same
prefixes; the figure that matters is their ratio within one run, not the absolute seconds of a given machine. Wall
and process CPU time are both reported: on a shared machine the CPU time (with --threads 1) is the steadier figure.
The model is untrained (speed does not depend on the weights) and has the inputs `amrs train-world-model` turns on by
default (session starts and time gaps, past pre-states, the history summary); `--plain` leaves them out.
"""

from __future__ import annotations

import argparse
import time

import torch

from amrs_hf.models.world_model import AmrsWorldModel, AmrsWorldModelConfig
from amrs_hf.simulation import RandomPolicy, simulate

FIRST_TRACK_ID = 10  # the track tokenizer's layout: 4 specials, 4 modes, 2 cohorts, then tracks


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizons", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--prefixes", type=int, default=32, help="session prefixes B")
    parser.add_argument("--rollouts", type=int, default=4, help="rollouts per prefix (R = B x this)")
    parser.add_argument("--prefix-length", type=int, default=32)
    parser.add_argument("--tracks", type=int, default=2000, help="catalogue size")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs per cell")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--plain", action="store_true",
                        help="without the session inputs, past pre-states and history summary (the config defaults)")
    return parser


def timed(fn, device, repeats) -> tuple[float, float]:
    """Best wall-clock and best process CPU seconds over `repeats` runs (CPU time is robust to a busy machine)."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def main(argv=None) -> list[dict]:
    args = make_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    vocab = FIRST_TRACK_ID + args.tracks
    config = AmrsWorldModelConfig(
        vocab_size=vocab, hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden_size, max_position_embeddings=args.prefix_length + max(args.horizons) + 1,
        use_session_inputs=not args.plain, pre_state_in_history=not args.plain, wide_history=not args.plain)
    model = AmrsWorldModel(config).to(device).eval()
    model.set_catalogue_features(torch.randn(vocab, config.num_audio_features))
    tracks = torch.arange(FIRST_TRACK_ID, vocab)
    g = torch.Generator().manual_seed(1)
    shape = (args.prefixes, args.prefix_length)
    prefixes = dict(
        track_ids=tracks[torch.randint(args.tracks, shape, generator=g)], valence=torch.rand(shape, generator=g),
        arousal=torch.rand(shape, generator=g), engagement=torch.rand(shape, generator=g),
        mode_ids=torch.randint(1, 5, (args.prefixes, 1), generator=g).expand(shape),
        pre_valence=torch.rand(shape, generator=g), pre_arousal=torch.rand(shape, generator=g),
        session_start=(torch.rand(shape, generator=g) < 0.2).float(), time_gap=torch.rand(shape, generator=g))
    policy = RandomPolicy(tracks)

    def rollout(horizon, use_cache):
        return lambda: simulate(model, prefixes, policy, horizon=horizon, num_rollouts=args.rollouts,
                                generator=torch.Generator(device).manual_seed(0), use_cache=use_cache)

    rollout(4, True)(), rollout(4, False)()  # warm-up
    rows = []
    for horizon in args.horizons:
        cached, cached_cpu = timed(rollout(horizon, True), device, args.repeats)
        recompute, recompute_cpu = timed(rollout(horizon, False), device, args.repeats)
        rows.append(dict(horizon=horizon, cached_s=cached, recompute_s=recompute, speedup=recompute / cached,
                         cached_cpu_s=cached_cpu, recompute_cpu_s=recompute_cpu, cpu_speedup=recompute_cpu / cached_cpu,
                         cached_ms_per_step=1000 * cached / horizon))
    rollouts = args.prefixes * args.rollouts
    print(f"{rollouts} rollouts ({args.prefixes} prefixes x {args.rollouts}) from {args.prefix_length}-play prefixes; "
          f"{args.layers} layers, hidden {args.hidden_size}{', plain inputs' if args.plain else ''}; device {device}, "
          f"torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    print()
    print("| horizon | cached (s) | recompute (s) | speedup | cached CPU (s) | recompute CPU (s) | CPU speedup "
          "| cached ms/step |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['horizon']} | {r['cached_s']:.2f} | {r['recompute_s']:.2f} | {r['speedup']:.1f}x "
              f"| {r['cached_cpu_s']:.2f} | {r['recompute_cpu_s']:.2f} | {r['cpu_speedup']:.1f}x "
              f"| {r['cached_ms_per_step']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
