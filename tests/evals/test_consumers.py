"""Every export format, loaded by its real consumer (offline, CPU), on the corpus in conftest."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from evals import services
from reviewqueue.core.models import Step
from tests.consumers import OAIEVAL, PROMPTFOO
from tests.evals.conftest import TOOLS
from tests.evals.openai_rules import check_dpo_file, check_sft_file

JSONL_FORMATS = [
    "openai-sft",
    "openai-dpo",
    "trl-sft",
    "trl-dpo",
    "inspect",
    "openai-evals",
    "promptfoo",
    "deepeval",
    "jsonl",
]


def export(tmp_path: Path, name: str, extension: str = "jsonl", **kwargs):
    out = tmp_path / name / f"data.{extension}"
    result = services.export_to_path(fmt_name=name, out=out, **kwargs)
    return out, result


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", JSONL_FORMATS)
def test_every_jsonl_format_loads_with_datasets(corpus, tmp_path, name):
    from datasets import load_dataset

    path, result = export(tmp_path, name)
    loaded = load_dataset("json", data_files=str(path), split="train")
    assert loaded.num_rows == result.rows == len(lines(path)) > 0
    manifest = lines(path.with_name("data.manifest.jsonl"))
    assert [m["line"] for m in manifest[:-1]] == list(range(1, result.rows + 1))
    assert manifest[-1]["summary"]["rows"] == result.rows
    assert all(m["verdict"] and m["step_id"] for m in manifest[:-1])


def test_jsonl_full_record_round_trips_through_datasets(corpus, tmp_path):
    from datasets import load_dataset

    path, result = export(tmp_path, "jsonl")
    rows = {r["id"]: r for r in load_dataset("json", data_files=str(path), split="train")}
    # every human-decided step, the duplicate removed, the auto-approved one left out
    assert result.rows == 17 and result.duplicates_removed == 1
    assert f"rq-step-{corpus['auto'].pk}" not in rows
    refund = rows[f"rq-step-{corpus['refund-corrected'].pk}"]
    assert refund["verdict"] == "corrected" and refund["reviewers"] == ["rev-ann"]
    assert json.loads(refund["expected"]["tool_calls"][0]["function"]["arguments"])["amount_eur"] == 39.9
    assert json.loads(refund["rejected"]["tool_calls"][0]["function"]["arguments"])["amount_eur"] == 399.0
    assert json.loads(refund["labels"]) == {"tone": "ok"}
    assert rows[f"rq-step-{corpus['unicode'].pk}"]["expected"]["content"] == "Willkommen in Tokio — أهلا 👋 «ça va?»"
    assert len(rows[f"rq-step-{corpus['huge'].pk}"]["expected"]["content"]) > 200_000
    shot = rows[f"rq-step-{corpus['screenshot'].pk}"]
    assert shot["images"][0].startswith("images/") and (path.parent / shot["images"][0]).is_file()
    assert rows[f"rq-step-{corpus['answer-rejected'].pk}"]["expected"] is None


def test_parquet_and_csv_load_with_datasets(corpus, tmp_path):
    from datasets import load_dataset

    parquet, result = export(tmp_path, "parquet", "parquet")
    table = load_dataset("parquet", data_files=str(parquet), split="train")
    assert table.num_rows == result.rows == 17
    first = table[0]
    assert json.loads(first["messages"])[0]["role"] == "system" and isinstance(first["reviewers"], list)
    csv_path, csv_result = export(tmp_path, "csv", "csv")
    loaded = load_dataset("csv", data_files=str(csv_path), split="train")
    assert loaded.num_rows == csv_result.rows == 17
    csv.field_size_limit(1 << 30)  # Python's csv module caps fields at 128 KiB; pandas/datasets do not
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    huge = next(r for r in rows if r["step_id"] == str(corpus["huge"].pk))
    assert len(json.loads(huge["expected"])["content"]) > 200_000


def test_openai_sft_follows_the_fine_tuning_rules(corpus, tmp_path):
    path, result = export(tmp_path, "openai-sft")
    assert check_sft_file(str(path)) == []
    records = lines(path)
    manifest = lines(path.with_name("data.manifest.jsonl"))
    by_step = {m["step_id"]: records[m["line"] - 1] for m in manifest[:-1]}
    # rejected and empty outputs never become targets
    assert corpus["answer-rejected"].pk not in by_step and corpus["empty"].pk not in by_step
    assert result.skipped == {"rejected without correction": 1, "empty assistant message": 1}
    refund = by_step[corpus["refund-corrected"].pk]["messages"][-1]
    assert refund["weight"] == 1 and json.loads(refund["tool_calls"][0]["function"]["arguments"])["amount_eur"] == 39.9
    answer = by_step[corpus["answer-approved"].pk]["messages"]
    assert [m.get("weight") for m in answer] == [None, None, 0, None, 1]
    image_parts = by_step[corpus["screenshot"].pk]["messages"][0]["content"]
    assert image_parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_dpo_pairs_corrections_only(corpus, tmp_path):
    path, result = export(tmp_path, "openai-dpo")
    assert result.rows == 3  # the three corrections
    assert check_dpo_file(str(path), minimum=3) == []
    assert result.warnings == ["openai-dpo needs at least 10 examples per file; this one has 3"]
    refund = next(r for r in lines(path) if r["input"]["messages"][-1]["content"].startswith("Refund"))
    preferred = json.loads(refund["preferred_output"][0]["tool_calls"][0]["function"]["arguments"])
    rejected = json.loads(refund["non_preferred_output"][0]["tool_calls"][0]["function"]["arguments"])
    assert (preferred["amount_eur"], rejected["amount_eur"]) == (39.9, 399.0)


def _tokenizer():
    """A real tokenizer with TRL's shipped Qwen2.5 chat template (no hub download)."""
    import trl
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "<|im_end|>": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", eos_token="<|im_end|>")
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    return tokenizer


def test_trl_sft_renders_with_trl_chat_template(corpus, tmp_path):
    from datasets import load_dataset
    from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages

    path, result = export(tmp_path, "trl-sft")
    tokenizer = _tokenizer()
    for row in lines(path):
        assert is_conversational(row)
        assert row["messages"][-1]["role"] == "assistant"
        if row.get("images"):  # a VLM processor renders these; TRL's own preparation must accept them
            from PIL import Image

            images = [Image.open(path.parent / p) for p in row["images"]]
            prepared = prepare_multimodal_messages(row["messages"], images=images)
            assert sum(part.get("type") == "image" for m in prepared for part in m["content"]) == len(images)
            continue
        tools = json.loads(row["tools"]) if row.get("tools") else None
        text = apply_chat_template({"messages": row["messages"]}, tokenizer, tools=tools)["text"]
        assert "<|im_start|>assistant" in text
        for message in row["messages"]:
            for call in message.get("tool_calls") or []:
                assert isinstance(call["function"]["arguments"], dict)
                # tojson of an object, not a double-encoded string
                assert json.dumps(call["function"]["arguments"])[:10] in text.replace(", ", ", ")
    assert load_dataset("json", data_files=str(path), split="train").num_rows == result.rows
    screenshot = next(r for r in lines(path) if r.get("images"))
    assert screenshot["messages"][0]["content"][0] == {"type": "image"}
    assert (path.parent / screenshot["images"][0]).is_file()


def test_trl_dpo_renders_prompt_chosen_rejected(corpus, tmp_path):
    from trl.data_utils import apply_chat_template, is_conversational

    path, result = export(tmp_path, "trl-dpo")
    assert result.rows == 3
    tokenizer = _tokenizer()
    for row in lines(path):
        assert is_conversational(row)
        tools = json.loads(row["tools"]) if row.get("tools") else None
        example = {k: row[k] for k in ("prompt", "chosen", "rejected")}
        rendered = apply_chat_template(example, tokenizer, tools=tools)
        assert rendered["chosen"] != rendered["rejected"]
        assert rendered["prompt"].endswith("<|im_start|>assistant\n")


def test_inspect_reads_samples_with_json_dataset(corpus, tmp_path):
    from inspect_ai.dataset import json_dataset
    from inspect_ai.model import ChatMessageAssistant, ChatMessageTool, ContentImage

    path, result = export(tmp_path, "inspect")
    samples = json_dataset(str(path))
    assert len(samples) == result.rows == 15
    assert len({s.id for s in samples}) == len(samples)
    by_id = {s.id: s for s in samples}
    answer = by_id[f"rq-step-{corpus['answer-approved'].pk}"]
    call = next(m for m in answer.input if isinstance(m, ChatMessageAssistant))
    assert call.tool_calls[0].function == "get_order_status" and call.tool_calls[0].arguments == {"order_id": "A123"}
    assert any(isinstance(m, ChatMessageTool) and m.function == "get_order_status" for m in answer.input)
    corrected = by_id[f"rq-step-{corpus['answer-corrected'].pk}"]
    assert corrected.target == "No: returns are accepted within 30 days of delivery."
    assert corrected.metadata["verdict"] == "corrected" and corrected.metadata["rejected_output"] == "Yes, any time."
    shot = by_id[f"rq-step-{corpus['screenshot'].pk}"]
    assert any(isinstance(p, ContentImage) for p in shot.input[0].content)


def test_deepeval_reads_goldens(corpus, tmp_path):
    from deepeval.dataset import EvaluationDataset
    from deepeval.test_case import LLMTestCase

    path, result = export(tmp_path, "deepeval")
    dataset = EvaluationDataset()
    dataset.add_goldens_from_jsonl_file(file_path=str(path))
    assert len(dataset.goldens) == result.rows == 15
    refund = next(g for g in dataset.goldens if g.expected_tools)
    assert refund.expected_tools[0].name == "issue_refund"
    assert refund.expected_tools[0].input_parameters == {"order_id": "B77", "amount_eur": 39.9}
    for golden in dataset.goldens:
        case = LLMTestCase(input=golden.input, actual_output="x", expected_output=golden.expected_output)
        assert case.input and (golden.expected_output or golden.expected_tools)


def test_promptfoo_and_openai_evals_shapes(corpus, tmp_path):
    path, _ = export(tmp_path, "promptfoo")
    tests = lines(path)
    assert all(isinstance(t["vars"], dict) and "input" in t["vars"] and t["assert"] for t in tests)
    rejected = next(t for t in tests if t["metadata"]["verdict"] == "rejected")
    assert rejected["assert"] == [{"type": "not-equals", "value": "It is made of paper."}]
    evals_path, _ = export(tmp_path, "openai-evals")
    for sample in lines(evals_path):
        assert {m["role"] for m in sample["input"]} <= {"system", "user", "assistant"}
        assert isinstance(sample["ideal"], str) and sample["ideal"]


def _openai_call(call: dict) -> dict:
    """A tool call as OpenAI returns it: arguments as a JSON string."""
    arguments = call["function"]["arguments"]
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {**call, "function": {"name": call["function"]["name"], "arguments": arguments}}


def run_consumer(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A consumer's CLI, offline, with its home in `cwd` (nothing written to ours)."""
    return subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "HOME": str(cwd), **env}, cwd=cwd, timeout=300
    )


def reviewed_answer(step: Step) -> str | dict:
    """What the reviewer decided the step should have said, from the database: the correction,
    else the agent's own output (which, for a rejection, is what must not be said)."""
    value = step.decision.output if step.status == "corrected" else step.output
    if isinstance(value, dict) and value.get("tool_calls"):
        return {"tool_calls": [_openai_call(call) for call in value["tool_calls"]]}
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@pytest.mark.promptfoo
def test_promptfoo_runs_every_exported_test_and_judges_the_reviewed_answers(corpus, tmp_path):
    """`promptfoo eval` (the real CLI, npm) on the export, with a provider that answers each test
    with the output its reviewer decided on: every assertion type is known to promptfoo, every
    test of an approved or corrected step passes, and every rejected step's test fails (its
    `not-equals` catches the rejected output)."""
    assert PROMPTFOO.exists(), "promptfoo is not installed: scripts/test.sh installs it with npm"
    path, result = export(tmp_path, "promptfoo", redact=False)
    tests = lines(path)
    steps = Step.objects.filter(pk__in=[t["metadata"]["rq_step_id"] for t in tests]).select_related("decision")
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({str(step.pk): reviewed_answer(step) for step in steps}))
    provider = Path(__file__).with_name("promptfoo_provider.js")
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "description": "reviewqueue export",
                "prompts": ["{{input}}"],
                "providers": [{"id": f"file://{provider}", "config": {"answers": str(answers), "tools": TOOLS}}],
                "tests": f"file://{path}",
            }
        )
    )
    out = tmp_path / "results.json"
    run = run_consumer(
        [str(PROMPTFOO), "eval", "-c", str(config), "--no-cache", "--no-write", "--no-progress-bar", "-o", str(out)],
        tmp_path,
        PROMPTFOO_DISABLE_TELEMETRY="1",
        PROMPTFOO_DISABLE_UPDATE="1",
    )
    assert run.returncode in (0, 100), run.stdout[-3000:] + run.stderr[-3000:]  # 100: some tests failed
    report = json.loads(out.read_text())["results"]
    assert report["stats"]["errors"] == 0
    outcomes = {r["testCase"]["metadata"]["rq_step_id"]: r for r in report["results"]}
    assert len(outcomes) == len(tests) == result.rows
    verdicts = {t["metadata"]["rq_step_id"]: t["metadata"]["verdict"] for t in tests}
    assert {"approved", "corrected", "rejected"} <= set(verdicts.values())
    assert any(t["assert"][0]["type"] == "is-valid-openai-tools-call" for t in tests)
    for step_id, outcome in outcomes.items():
        assert outcome["success"] == (verdicts[step_id] != "rejected"), (verdicts[step_id], outcome.get("error"))


def answer_text(answer: str | dict) -> str:
    """A reviewed answer as the text an OpenAI Evals `Match` eval compares: tool calls written
    out as name(arguments)."""
    if isinstance(answer, str):
        return answer
    calls = answer["tool_calls"]
    return "\n".join(f"{c['function']['name']}({c['function']['arguments']})" for c in calls)


@pytest.mark.oaievals
def test_openai_evals_runs_the_export_and_the_reviewed_answers_match(corpus, tmp_path):
    """`oaieval` (the `evals` package's CLI) runs the export as a registered `Match` eval, with a
    completion function that answers each sample with the output its reviewer decided on (from
    the database, found through the manifest): every sample is evaluated and every one matches."""
    assert OAIEVAL.exists(), "OpenAI Evals is not installed: scripts/test.sh installs it into .consumers/oaievals"
    path, result = export(tmp_path, "openai-evals", redact=False)
    samples = lines(path)
    manifest = lines(path.with_name("data.manifest.jsonl"))[:-1]
    steps = {s.pk: s for s in Step.objects.filter(pk__in=[m["step_id"] for m in manifest]).select_related("decision")}
    pairs = [
        [sample["input"], answer_text(reviewed_answer(steps[entry["step_id"]]))]
        for sample, entry in zip(samples, manifest, strict=True)
    ]
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(pairs))
    registry = tmp_path / "registry"
    (registry / "evals").mkdir(parents=True)
    (registry / "completion_fns").mkdir()
    (registry / "evals" / "rq.yaml").write_text(
        yaml.safe_dump(
            {
                "rq-export": {"id": "rq-export.dev.v0", "metrics": ["accuracy"]},
                "rq-export.dev.v0": {"class": "evals.elsuite.basic.match:Match", "args": {"samples_jsonl": str(path)}},
            }
        )
    )
    (registry / "completion_fns" / "rq.yaml").write_text(
        yaml.safe_dump({"rq-reviewed": {"class": "rq_reviewed:ReviewedAnswers", "args": {"answers": str(answers)}}})
    )
    record = tmp_path / "record.jsonl"
    run = run_consumer(  # in tmp_path, not the project root: its `evals` app would shadow the package
        [str(OAIEVAL), "rq-reviewed", "rq-export", "--registry_path", str(registry), "--record_path", str(record)],
        tmp_path,
        PYTHONPATH=str(Path(__file__).with_name("oaievals")),
        OPENAI_API_KEY="sk-offline-test",  # the package builds a client at import; it is never called
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    events = [json.loads(line) for line in record.read_text().splitlines()]
    matches = [e["data"] for e in events if e.get("type") == "match"]
    final = next(e["final_report"] for e in events if "final_report" in e)
    assert len(samples) == result.rows == len(matches) > 0
    assert all(m["correct"] for m in matches), [m for m in matches if not m["correct"]]
    assert final["accuracy"] == 1.0
