"""`honing constitute`: turn failures into training data by constitutional critique and revision.

    prompts: a redteam run directory (its failures.jsonl, train split by default) or a prompt file
    ─▶ answers to revise (the failure's own answer, else the model's) ─▶ a principle drawn per round
    ─▶ critique ─▶ revision (× revisions) ─▶ sft.jsonl (chat) + preferences.jsonl (revised ≻ original)
    ─▶ with anchors: the run's harmless prompts answered helpfully ≻ a refusal (so refusing is not learnt everywhere),
       and the same for ordinary requests (anchor_prompts: a file or builtin:everyday)
    ─▶ with a feedback model: two fresh answers per prompt, labelled in both orders ─▶ ai_preferences.jsonl
    ─▶ run.json (inputs with hashes, counts); every record carries its provenance

preferences.jsonl and ai_preferences.jsonl are `honing dpo` data as they are (prompt, chosen, rejected).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from honing.config import ChatModelConfig, ConstituteConfig
from honing.errors import DataError
from honing.io import write_jsonl_atomic
from honing.runs import Run
from honing.ui import console


def load_items(cfg: ConstituteConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The prompts to work on, and where they came from. A redteam run gives its failures (one per
    distinct conversation, first answer kept); a file gives prompts with an optional `response`."""
    source = Path(cfg.prompts)
    if source.is_dir():
        failures = source / "failures.jsonl"
        if not failures.is_file():
            raise DataError(f"{source} is a directory without failures.jsonl: give a `honing redteam` run directory "
                            "or a prompt file")
        items, seen, skipped = [], set(), 0
        from honing.data.loading import read_records

        for file, line, record in read_records(failures):
            if not isinstance(record.get("messages"), list) or not isinstance(record.get("response"), str):
                raise DataError(f"{file}:{line}: a failure record needs `messages` and `response`")
            if cfg.splits and record.get("split") not in cfg.splits:
                skipped += 1
                continue
            key = json.dumps(record["messages"], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            items.append({"conversation": record["messages"], "answer": record["response"], "where": f"{file}:{line}",
                          "category": record.get("category"), "probe_id": record.get("probe_id"),
                          "base_id": record.get("base_id"), "split": record.get("split"),
                          "redteam_run": record.get("run_id"), "detectors": record.get("detectors"),
                          "fail_when": record.get("fail_when", "any"), "secret": record.get("secret")})
        origin = {"kind": "redteam_run", "path": str(source), "failures": str(failures),
                  "left_out_by_split": skipped}
    else:
        from honing.data.prompts import as_messages, read_prompts

        items = []
        for index, (record, prompt) in enumerate(read_prompts(source)):
            answer = record.get("response") if isinstance(record.get("response"), str) else None
            items.append({"conversation": as_messages(prompt), "answer": answer or None, "where": f"{source} #{index + 1}",
                          "category": record.get("category"), "probe_id": record.get("id") or record.get("probe_id"),
                          "split": record.get("split")})
        origin = {"kind": "file", "path": str(source)}
    if cfg.max_prompts is not None:
        items = items[:cfg.max_prompts]
    if not items:
        raise DataError(f"{source}: no prompt to work on" + (f" (splits {cfg.splits})" if source.is_dir() else ""))
    return items, origin


def model_config(cfg: ConstituteConfig) -> ChatModelConfig:
    """The configured model; else the redteam run's target (the model that failed revises itself); else the embedded one."""
    if cfg.model is not None:
        return cfg.model
    saved = Path(cfg.prompts) / "config.yaml"
    if saved.is_file():
        target = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("target")
        if isinstance(target, dict):
            return ChatModelConfig(**target)
    return ChatModelConfig()


def constitute(cfg: ConstituteConfig, *, model: Any = None, feedback: Any = None) -> dict[str, Any]:
    """Run the loop. `model` and `feedback` may be given as ChatModels (a scripted fake, say)."""
    from honing.models.chat import ChatModel
    from honing.redteam.constitution import critique_and_revise, label_pairs, load_constitution

    constitution = load_constitution(cfg.constitution)
    items, origin = load_items(cfg)
    if cfg.anchors and not (Path(cfg.prompts) / "results.json").is_file():
        raise DataError(f"anchors: true needs a `honing redteam` run directory with results.json, not {cfg.prompts}")
    harmless = (_harmless_probes(cfg) if cfg.anchors else []) + _ordinary_requests(cfg)
    run = Run.create("constitute", cfg, cfg.output.dir)
    run.add_input("prompts", origin.get("failures") or origin["path"], **{k: v for k, v in origin.items() if k != "path"})
    run.add_input("constitution", constitution.source)
    if cfg.anchor_prompts:
        run.add_input("anchor_prompts", anchor_prompts_path(cfg.anchor_prompts))
    model_cfg = model_config(cfg)
    if model is None:
        model = ChatModel.load(model_cfg, cfg.sampling, role="model", batch_size=cfg.batch_size, progress=True)
        _record(run, "model", model_cfg, model)
    else:
        _record(run, "model", None, model)
    console.print(f"{len(items)} prompts from {origin['path']}; {len(constitution.principles)} principles; "
                  f"{cfg.revisions} revision round(s), up to {cfg.revision_samples} sample(s) each, cut at "
                  f"{cfg.sampling.max_new_tokens} new tokens; "
                  f"run directory {run.dir}")

    missing = [i for i, item in enumerate(items) if item["answer"] is None]
    for i, answer in zip(missing, model.texts([items[i]["conversation"] for i in missing], seed=cfg.sampling.seed)):
        items[i]["answer"] = answer
    rng = random.Random(cfg.seed)
    principles = [[constitution.draw(rng, item["category"]) for _ in range(cfg.revisions)] for item in items]

    def passes(i: int, text: str) -> bool:  # best of n: the probe's detectors no longer flag it (unknown: take it)
        return still_fails(items[i], text) is not True

    revisions = critique_and_revise(model, [it["conversation"] for it in items], [it["answer"] for it in items],
                                    principles, seed=cfg.sampling.seed, samples=cfg.revision_samples,
                                    accept=passes if cfg.revision_samples > 1 else None)
    run_id = run.record["run_id"]
    sft, pairs, skipped = _revised_records(cfg, items, revisions, principles, run_id, model.identity)
    anchors, harmless_prompts = [], 0
    if harmless:
        anchors, harmless_prompts = _anchor_pairs(cfg, model, constitution, run_id, harmless)
        for pair in anchors:
            sft.append({"messages": [*pair["prompt"], {"role": "assistant", "content": pair["chosen"]}],
                        "_provenance": pair["_provenance"]})
        pairs += anchors
    outputs = {"sft": _write_jsonl(run.dir / "sft.jsonl", sft),
               "preferences": _write_jsonl(run.dir / "preferences.jsonl", pairs)}
    feedback = _feedback_model(cfg, run, feedback)
    labelled = []
    if feedback is not None:
        labelled = _ai_pairs(cfg, items, model, feedback, rng, constitution, run_id, label_pairs)
        outputs["ai_preferences"] = _write_jsonl(run.dir / "ai_preferences.jsonl", labelled)
    for role, path in outputs.items():
        run.add_output(role, path)
    counts = _counts(items, sft, pairs, labelled, revisions, anchors, harmless_prompts, skipped)
    run.finish(status="completed", metrics=counts)
    console.print(f"{len(sft)} revised answers → {outputs['sft']}; {len(pairs)} pairs → {outputs['preferences']}"
                  + (f"; {len(labelled)} AI-labelled pairs → {outputs['ai_preferences']}" if feedback is not None else "")
                  + (f"; skipped {skipped}" if any(skipped.values()) else ""))
    return {"run_dir": str(run.dir), "outputs": {k: str(v) for k, v in outputs.items()}, **counts}


def _revised_records(cfg: ConstituteConfig, items: list[dict[str, Any]], revisions: list[Any],
                     principles: list[list[Any]], run_id: str, identity: dict[str, Any]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """SFT records and preference pairs from the revisions, and what was skipped, by reason."""
    sft, pairs = [], []
    skipped = {"revision_empty_or_unchanged": 0, "copied_example": 0, "original_empty": 0, "still_failing": 0}
    for item, revision, drawn in zip(items, revisions, principles):
        fixed = still_fails(item, revision.revised)
        provenance = _provenance(item, run_id, identity) | {
            "principles": [p.id for p in drawn], "steps": revision.steps,
            "revision_passes_detectors": None if fixed is None else not fixed}
        if not revision.original.strip():
            skipped["original_empty"] += 1
        if not revision.revised.strip() or revision.revised.strip() == revision.original.strip():
            parroted = not any(st["kept"] for st in revision.steps) and any(st.get("copied_example") for st in revision.steps)
            skipped["copied_example" if parroted else "revision_empty_or_unchanged"] += 1
            continue
        if cfg.require_fixed and fixed:
            skipped["still_failing"] += 1
            continue
        sft.append({"messages": [*item["conversation"], {"role": "assistant", "content": revision.revised}],
                    "_provenance": provenance})
        if revision.original.strip():
            pairs.append({"prompt": item["conversation"], "chosen": revision.revised, "rejected": revision.original,
                          "_provenance": provenance})
    return sft, pairs, skipped


def _feedback_model(cfg: ConstituteConfig, run: Run, feedback: Any) -> Any:
    """The feedback model (given, or loaded from cfg.feedback and recorded), or None for no AI labels."""
    from honing.models.chat import ChatModel

    if feedback is None and cfg.feedback is not None:
        greedy = cfg.sampling.model_copy(update={"temperature": 0.0, "max_new_tokens": cfg.feedback_max_new_tokens})
        feedback = ChatModel.load(cfg.feedback, greedy, role="feedback", batch_size=cfg.batch_size, progress=True)
        _record(run, "feedback", cfg.feedback, feedback)
    elif feedback is not None:
        _record(run, "feedback", None, feedback)
    return feedback


def _counts(items: list[dict[str, Any]], sft: list[dict[str, Any]], pairs: list[dict[str, Any]],
            labelled: list[dict[str, Any]], revisions: list[Any], anchors: list[dict[str, Any]],
            harmless_prompts: int, skipped: dict[str, int]) -> dict[str, Any]:
    """The run's metrics."""
    return {"prompts": len(items), "sft": len(sft), "preferences": len(pairs), "ai_preferences": len(labelled),
            "revisions_sampled": sum(st.get("samples", 1) for r in revisions for st in r.steps),
            "revisions_passing_detectors": sum(p["_provenance"].get("revision_passes_detectors") is True for p in sft),
            "anchors": len(anchors),
            "helpful_anchors": sum(p["_provenance"]["label"] == "helpful_anchor" for p in anchors),
            "anchors_greedy": sum(p["_provenance"]["anchor_decoding"] == "greedy" for p in anchors),
            "anchor_prompts_without_helpful_answer": harmless_prompts - len(anchors),
            "skipped": skipped}


def _anchor_pairs(cfg: ConstituteConfig, model: Any, constitution: Any, run_id: str,
                  harmless: list[tuple[list[dict[str, Any]], dict[str, Any]]]) -> tuple[list[dict[str, Any]], int]:
    """Anchors: a helpful answer to each harmless prompt, preferred to the model's own continuation of the refusal
    opening; and how many harmless prompts there were (those never answered helpfully get no anchor). The harmless
    prompts are the redteam run's over-refusal probes (`anchors`) and the ordinary requests of `anchor_prompts`."""
    from honing.redteam.constitution import with_opening
    from honing.redteam.detectors import find_refusal

    refusing = next((p for p in constitution.principles if "harmful_request" in p.categories and p.revision_opening), None)
    if refusing is None:
        raise DataError(f"anchors need a principle for harmful_request with a revision_opening in {constitution.source}")
    helpful: dict[int, str] = {}
    tried: dict[int, dict[str, Any]] = {}  # which try gave each kept answer: greedy, or the run's `sampling`
    first = model.greedy()  # the most likely answer first, so training keeps what the model says now
    for s in range(cfg.revision_samples):
        pending = [i for i in range(len(harmless)) if i not in helpful]
        asked = first if s == 0 else model
        for i, answer in zip(pending, asked.texts([harmless[i][0] for i in pending], seed=cfg.sampling.seed + 500 + s)):
            if answer.strip() and not find_refusal(answer)[0]:
                helpful[i] = answer.strip()
                tried[i] = {"anchor_try": s + 1, "anchor_decoding": "greedy" if asked is not model else "sampling"}
    kept = sorted(helpful)
    refusals = model.texts([[*harmless[i][0], {"role": "assistant", "content": refusing.revision_opening}] for i in kept],
                   seed=cfg.sampling.seed + 600)
    out = []
    for i, refusal in zip(kept, refusals):
        conversation, provenance = harmless[i]
        out.append({"prompt": conversation, "chosen": helpful[i], "rejected": with_opening(refusing, refusal.strip()),
                    "_provenance": provenance | tried[i] | {"constitute_run": run_id, "model": model.identity,
                                                            "refusal_opening_of": refusing.id}})
    for label in ("over_refusal_anchor", "helpful_anchor"):
        total = sum(p["label"] == label for _, p in harmless)
        if total:
            made = [pair["_provenance"] for pair in out if pair["_provenance"]["label"] == label]
            greedy_made = sum(p["anchor_decoding"] == "greedy" for p in made)
            console.print(f"{label}s: {len(made)} of {total} harmless prompts answered without a refusal "
                          f"in {cfg.revision_samples} tries ({greedy_made} at the first, greedy, try)")
    return out, len(harmless)


def _harmless_probes(cfg: ConstituteConfig) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """The over-refusal probes of the redteam run's splits, as the run asked them, with their provenance."""
    from honing.data.prompts import as_messages
    from honing.redteam.probes import OVER_REFUSAL

    source = Path(cfg.prompts)
    results = json.loads((source / "results.json").read_text(encoding="utf-8"))
    harmless = [o for o in results.get("outcomes", []) if o.get("category") == OVER_REFUSAL and not o.get("followups")
                and not o.get("round") and (not cfg.splits or o.get("split") in cfg.splits)]
    system_prompt = _run_system_prompt(cfg)
    return [(as_messages(o["messages"], system_prompt),
             {"source": f"{source / 'results.json'} (probe {o['id']})", "probe_id": o["id"], "base_id": o.get("base_id"),
              "category": OVER_REFUSAL, "split": o.get("split"), "redteam_run": results.get("run_id"),
              "label": "over_refusal_anchor"}) for o in harmless]


def _ordinary_requests(cfg: ConstituteConfig) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """The prompts of `anchor_prompts` (a file, or builtin:everyday), asked under the redteam run's system prompt."""
    if cfg.anchor_prompts is None:
        return []
    from honing.data.prompts import as_messages, read_prompts

    path = anchor_prompts_path(cfg.anchor_prompts)
    records = read_prompts(path)[:cfg.max_anchor_prompts]
    system_prompt = _run_system_prompt(cfg)
    return [(as_messages(prompt, system_prompt),
             {"source": f"{path} #{index + 1}", "probe_id": record.get("id"), "category": record.get("kind"),
              "label": "helpful_anchor"}) for index, (record, prompt) in enumerate(records)]


def anchor_prompts_path(spec: str) -> Path:
    """A prompt file, or the bundled ordinary requests (builtin:everyday)."""
    if spec == "builtin:everyday":
        return Path(__file__).resolve().parent.parent / "redteam" / "data" / "everyday.jsonl"
    if spec.startswith("builtin:"):
        raise DataError(f"anchor_prompts: unknown bundled prompts {spec!r}; bundled: builtin:everyday")
    return Path(spec)


def _run_system_prompt(cfg: ConstituteConfig) -> str | None:
    saved = Path(cfg.prompts) / "config.yaml"
    if not saved.is_file():
        return None
    return (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("system_prompt")


def _ai_pairs(cfg, items, model, feedback, rng, constitution, run_id, label_pairs) -> list[dict[str, Any]]:
    """Two fresh answers per prompt; the feedback model picks the one that better follows a drawn principle."""
    conversations = [it["conversation"] for it in items]
    first = model.texts(conversations, seed=cfg.sampling.seed + 101)
    second = model.texts(conversations, seed=cfg.sampling.seed + 102)
    drawn = [constitution.draw(rng, it["category"]) for it in items]
    keep = [i for i in range(len(items)) if first[i].strip() and second[i].strip() and first[i].strip() != second[i].strip()]
    verdicts = label_pairs(feedback, [conversations[i] for i in keep], [first[i] for i in keep],
                           [second[i] for i in keep], [drawn[i] for i in keep], seed=cfg.seed)
    out = []
    for i, verdict in zip(keep, verdicts):
        if verdict is None:
            continue
        provenance = _provenance(items[i], run_id, model.identity) | {
            "principle": drawn[i].id, "feedback_model": feedback.identity, "verdicts": verdict["verdicts"],
            "label": "ai_feedback"}
        out.append({"prompt": conversations[i], "chosen": verdict["chosen"], "rejected": verdict["rejected"],
                    "_provenance": provenance})
    console.print(f"AI feedback: {len(out)} of {len(keep)} pairs labelled the same way in both orders "
                  f"({len(items) - len(keep)} prompts had two identical or empty answers)")
    return out


def still_fails(item: dict[str, Any], answer: str) -> bool | None:
    """Whether `answer` still fails the red-team probe's own rule detectors (judge detectors are left
    out); None when the prompt did not come from a redteam run."""
    if not item.get("detectors"):
        return None
    from pydantic import TypeAdapter

    from honing.redteam.detectors import combine, detect
    from honing.redteam.probes import DetectorSpec, Probe

    specs = TypeAdapter(list[DetectorSpec]).validate_python(item["detectors"])
    probe = Probe(id=item.get("probe_id") or "prompt", category=item.get("category") or "", messages=item["conversation"],
                  detectors=specs, fail_when=item.get("fail_when") or "any", secret=item.get("secret"))
    verdicts = [v for v in (detect(spec, answer, probe, item["conversation"]) for spec in specs) if v is not None]
    return combine(verdicts, probe.fail_when) if verdicts else None


def _provenance(item: dict[str, Any], run_id: str, identity: dict[str, Any]) -> dict[str, Any]:
    return {"source": item["where"], "probe_id": item.get("probe_id"), "base_id": item.get("base_id"),
            "category": item.get("category"), "split": item.get("split"), "redteam_run": item.get("redteam_run"),
            "constitute_run": run_id, "model": identity}


def _record(run: Run, role: str, model_cfg: ChatModelConfig | None, model: Any) -> None:
    from honing.stages.redteam import record_model

    record_model(run, role, model_cfg, model)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    return write_jsonl_atomic(path, records)


run = constitute
