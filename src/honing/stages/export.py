"""`honing export`: a model, with any adapter folded in, written for serving elsewhere.

    check the output (refused when it exists and is not empty, unless overwrite=true)
    ─▶ load the model in float32 (an adapter, or a run's adapter, merged on load: the one merge honing has)
    ─▶ check a GGUF can be written (llama architecture, byte-level BPE) before anything is written
    ─▶ in a temporary directory beside the output: model.gguf + Modelfile, model/ (Hugging Face), run.json
    ─▶ moved onto the output in one rename, so a failure leaves no half-written export

The output is a run directory: `model.path=OUT` loads its model/, and lineage walks from model.gguf or model/ back
through the base model and adapter to the data that trained them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honing.config.export import ExportConfig
from honing.errors import HoningError
from honing.runs import Run, find_parent_run
from honing.ui import console

GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"


def export(cfg: ExportConfig) -> dict[str, Any]:
    from honing.io import atomic_dir

    final = Path(cfg.output)
    check_output(final, cfg.overwrite)
    loaded = load_merged(cfg)
    refuse_source_inside(final, cfg, loaded.source)
    wants_gguf, wants_hf = cfg.format in ("gguf", "both"), cfg.format in ("hf", "both")
    if wants_gguf:
        from honing.models.gguf_export import check_exportable

        check_exportable(loaded.model, loaded.tokenizer)
    console.print(f"exporting {describe_source(loaded.source)} → {final} ({cfg.format}"
                  f"{', GGUF ' + cfg.gguf_dtype if wants_gguf else ''}{', HF ' + cfg.dtype if wants_hf else ''})",
                  markup=False, soft_wrap=True)
    with atomic_dir(final) as tmp:
        run = Run.create("export", cfg, tmp)
        record_inputs(run, cfg, loaded.source)
        written: dict[str, Path] = {}
        if wants_gguf:  # first: it reads the float32 weights before any cast for the HF copy
            written.update(write_gguf_files(run, loaded, tmp, cfg, name=final.name))
        if wants_hf:
            written["model"] = save_hf(loaded, tmp, cfg.dtype)
        record_outputs(run, written, tmp, final)
        run.finish()
    outputs = {role: str(final / path.relative_to(tmp)) for role, path in written.items()}
    report(outputs, final)
    return {"output": str(final), "outputs": outputs, "run_dir": str(final)}


def check_output(final: Path, overwrite: bool) -> None:
    if final.exists() and not final.is_dir():
        raise HoningError(f"output {final} is a file; give a directory to export into")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise HoningError(f"output {final} already exists and is not empty; choose another output, or set "
                          "overwrite=true to replace it")


def load_merged(cfg: ExportConfig) -> Any:
    """The model in float32 with its tokenizer and source record; model.adapter (or a run directory's adapter) is
    folded into the weights on load."""
    from honing.models.load import load_adapter_model, load_model

    if cfg.model.adapter:
        return load_adapter_model(cfg.model, cfg.model.adapter, dtype="float32", merge=True)
    return load_model(cfg.model, dtype="float32")


def refuse_source_inside(final: Path, cfg: ExportConfig, source: dict[str, Any]) -> None:
    """overwrite=true must not delete the model being exported."""
    target = final.resolve()
    for given in (cfg.model.path, cfg.model.adapter, source.get("path"), source.get("adapter")):
        if not given or str(given).startswith("registry:"):
            continue
        path = Path(given).expanduser().resolve()
        if path == target or target in path.parents:
            raise HoningError(f"output {final} holds the model being exported ({given}); export to another directory")


def describe_source(source: dict[str, Any]) -> str:
    base = (source.get("registry") or {}).get("ref") or source.get("run") or source.get("path") or source.get("kind")
    return f"{base} + adapter {source['adapter']}" if source.get("adapter") and not source.get("run") else str(base)


def record_inputs(run: Run, cfg: ExportConfig, source: dict[str, Any]) -> None:
    extra = {key: source[key] for key in ("run", "registry") if source.get(key)}
    run.add_input("base_model", source.get("path") or source.get("kind"), sha256=source.get("sha256"),
                  kind=source.get("kind"), **extra)
    if source.get("adapter"):
        run.add_input("adapter", source["adapter"], sha256=source.get("adapter_sha256"))
    run.set("parent", find_parent_run(cfg.model.adapter or cfg.model.path))


def write_gguf_files(run: Run, loaded: Any, tmp: Path, cfg: ExportConfig, *, name: str) -> dict[str, Path]:
    from honing.io import write_text_atomic
    from honing.models.gguf_export import modelfile, write_gguf

    gguf_path = tmp / GGUF_FILE
    summary = write_gguf(loaded.model, loaded.tokenizer, gguf_path, dtype=cfg.gguf_dtype, name=name)
    ollama = modelfile(loaded.tokenizer, GGUF_FILE)
    write_text_atomic(tmp / MODELFILE, ollama.text)
    run.set("gguf", {**summary, "modelfile_template": ollama.template, "default_system_prompt": ollama.system})
    if ollama.template == "gguf":
        console.print("[yellow]the chat template is not ChatML-like: the Modelfile sets no TEMPLATE and Ollama reads "
                      "the one stored in the GGUF (see the comment in the Modelfile)[/]")
    return {"gguf": gguf_path, "modelfile": tmp / MODELFILE}


def save_hf(loaded: Any, tmp: Path, dtype: str) -> Path:
    from honing.models.load import resolve_dtype
    from honing.models.save import save_model

    loaded.model.to(resolve_dtype(dtype, "cpu"))
    return Path(save_model(loaded.model, loaded.tokenizer, tmp)["model"])


def record_outputs(run: Run, written: dict[str, Path], tmp: Path, final: Path) -> None:
    """Outputs under their final names, with hashes lineage matches later loads against: the weights' hash of
    model/ (as loading it records), the file's of model.gguf (the same as loading the .gguf records) and Modelfile."""
    from honing.models.source import weight_files, weights_sha256
    from honing.runs import file_sha256

    hashes = {}
    for role, path in written.items():
        run.add_output(role, final / path.relative_to(tmp))
        hashes[role] = weights_sha256(weight_files(path)) if path.is_dir() else file_sha256(path)
    run.set("output_sha256", hashes)


def report(outputs: dict[str, str], final: Path) -> None:
    for role, path in outputs.items():
        console.print(f"  {role}: {path}", markup=False, soft_wrap=True)
    if "modelfile" in outputs:
        console.print(f"serve with Ollama: ollama create {final.name} -f {outputs['modelfile']}", markup=False,
                      soft_wrap=True)
    if "model" in outputs:
        console.print(f"serve with vLLM: vllm serve {outputs['model']}", markup=False, soft_wrap=True)
    console.print(f"[green]done[/] — record: {final / 'run.json'}", soft_wrap=True)


run = export
