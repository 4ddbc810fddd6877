"""`auroragpt post ...`: the iterative generate -> score -> DPO loop, and the demo's post-training data.

Arguments are parsed here; the work lives in `auroragpt.post`.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("post", help="post-training: iterative DPO rounds, demo tasks",
                                   description="Post-training beyond one run (SFT and DPO runs are `auroragpt train` "
                                   "with train.objective = \"sft\" or \"dpo\").")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="post_command", metavar="ACTION")

    p = sub.add_parser("iterate", help="rounds of generate -> score -> preference pairs -> DPO (resumable)",
                       description="Each round samples completions from the current policy, scores them, pairs the "
                       "best with the worst per prompt and runs DPO from the policy. Rerunning resumes.")
    p.add_argument("--config", required=True, help="the DPO run configuration (its init_from is round 0's policy)")
    p.add_argument("--prompts", required=True, help="JSON lines with a 'prompt' (string or message list)")
    p.add_argument("--out", required=True, help="folder of the rounds (round_00/, round_01/, ...)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--samples", type=int, default=4, help="completions per prompt and round")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--scorer", default=None, help="module:function called as f(prompt, completion) -> float")
    p.add_argument("--scorer-command", default=None,
                   help="command reading {prompt, completion} JSON lines on stdin, printing one score per line")
    p.add_argument("--chat-template", default="default", help="for message-list prompts: default, hf or a .jinja file")
    p.add_argument("--nprocs", type=int, default=1, help="ranks of each DPO run (through auroragpt launch)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override the DPO config (repeatable), e.g. --set train.steps=20")
    p.set_defaults(func=_iterate)

    p = sub.add_parser("demo-data", help="write the demo's SFT chats and DPO pairs (small additions)")
    p.add_argument("out_dir")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--pairs", type=int, default=512)
    p.set_defaults(func=_demo_data)


def _iterate(args: argparse.Namespace) -> int:
    from auroragpt.log import configure
    from auroragpt.post.iterate import iterate, load_scorer

    configure(0)
    scorer = load_scorer(args.scorer, args.scorer_command)
    records = iterate(args.config, args.prompts, args.out, args.rounds, scorer, samples=args.samples,
                      max_new_tokens=args.max_new_tokens, nprocs=args.nprocs, overrides=args.overrides,
                      template=args.chat_template)
    for record in records:
        print(f"round {record['round']}: mean score {record['mean_score']:.3f}, {record['pairs']} pairs -> {record['result']}")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from auroragpt.post.tasks import write_arithmetic_tasks

    sft, dpo = write_arithmetic_tasks(args.out_dir, args.examples, args.pairs)
    print(f"{sft}\n{dpo}")
    return 0
