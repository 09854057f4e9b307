"""Red teaming: probes, mutators that multiply them, detectors that decide whether an attack worked,
a runner against any chat target (a honing.models.chat.ChatModel: local model, endpoint, or a
scripted fake), and the report.

    probes.py     the probe format, the bundled library (data/probes/*.yaml) and user probe files
    mutators.py   encodings, character tricks, multi-turn escalation, attacker-model rewrites
    detectors.py  refusal, keyword, regex, secret, PII, system-prompt leak, choice (bias), judge
    runner.py     attempts, multi-turn rounds, verdicts, judge confirmation, attacker rounds
    report.py     attack success rates with bootstrap intervals; JSON, Markdown and HTML
"""
