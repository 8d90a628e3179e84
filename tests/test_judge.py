"""EXP2 judging: the backend registry, the strict judge parser, LLM judging end to end against the loopback
OpenAI-compatible server (the study's grouping, JSON schema, two orders, re-ask, cache, outages, quarantine),
the offline proxy metrics, and the bootstrap report."""
from __future__ import annotations

import json
import re

import pytest

from pathlib import Path

from tinyhelen import params
from tinyhelen.config import ParamsError, validate_section
from tinyhelen.exp2 import judge
from tinyhelen.exp2.judge import (BACKENDS, BigramLM, JudgeConfig, bootstrap_ci, judge_llm, judge_proxy,
                                  parse_judgement, proxy_scores, select_checkpoints)
from tinyhelen.exp2.result import Exp2Result, plot_png
from tinyhelen.exp2.result import summarise as report
from tinyhelen.io import InputError
from tinyhelen.llm import LLMFailure
from tinyhelen.llm.config import LLMConfig
from tinyhelen.llm.fake_server import END, FakeModel, FakeServer
from tinyhelen.exp2.llm_judge import EMPTY_ANSWER, judge_groups, judge_llm_config, orders_for

REPO = Path(__file__).resolve().parents[1]


def markdown(rep, backend, provenance=None):
    """EXP2's document from ``summarise``'s result, as the exp2_report stage renders it (typed result first)."""
    from tinyhelen.exp2.tables import document

    return document(typed(rep, backend), provenance=provenance)


def typed(rep, backend):
    b = BACKENDS[backend]
    return Exp2Result.build(rep, judge_is_llm=b.is_llm, main_metric=b.main_metric, instruct_source="code_pairs",
                            template=None, questions=None, tune_reports={}, non_embedding_params=None)

RECIPES = ["leaner-leaner", "leaner-ori", "ori-leaner", "ori-ori"]
GOOD = {"A": {"grammar": 4, "coherence": 3, "specificity": 2}, "B": {"grammar": 0, "coherence": 5, "specificity": 1}}


# ----------------------------------------------------------------------------------------- parser
@pytest.mark.parametrize("reply", [
    json.dumps(GOOD),
    "  " + json.dumps(GOOD, indent=2) + "\n<<<END>>>\n",
    "```json\n" + json.dumps(GOOD) + "\n```",
    "```\n" + json.dumps(GOOD) + "\n```\n<<<END>>>",
])
def test_parser_accepts_good_replies(reply):
    assert parse_judgement(reply, ["A", "B"]) == GOOD


@pytest.mark.parametrize("reply, message", [
    ("Sure! " + json.dumps(GOOD), "not a JSON object"),
    (json.dumps(GOOD) + " Hope this helps.", "not valid JSON"),
    ("", "not a JSON object"),
    ("{\"A\": {\"grammar\": 4,", "not valid JSON"),
    (json.dumps([GOOD]), "not a JSON object"),
    # partial: a label or a criterion missing, or extra ones
    (json.dumps({"A": GOOD["A"]}), r"missing \['B'\]"),
    (json.dumps({**GOOD, "C": GOOD["A"]}), r"unexpected \['C'\]"),
    (json.dumps({"A": {"grammar": 4, "coherence": 3}, "B": GOOD["B"]}), r"A: criteria .* missing \['specificity'\]"),
    (json.dumps({"A": {**GOOD["A"], "fluency": 2}, "B": GOOD["B"]}), r"unexpected \['fluency'\]"),
    (json.dumps({"A": 3, "B": GOOD["B"]}), "A: expected an object"),
    # bad values
    (json.dumps({"A": {**GOOD["A"], "grammar": 6}, "B": GOOD["B"]}), "outside 0-5"),
    (json.dumps({"A": {**GOOD["A"], "grammar": -1}, "B": GOOD["B"]}), "outside 0-5"),
    (json.dumps({"A": {**GOOD["A"], "grammar": 3.5}, "B": GOOD["B"]}), "must be an integer"),
    (json.dumps({"A": {**GOOD["A"], "grammar": "4"}, "B": GOOD["B"]}), "must be an integer"),
    (json.dumps({"A": {**GOOD["A"], "grammar": True}, "B": GOOD["B"]}), "must be an integer"),
])
def test_parser_rejects_bad_and_partial_replies(reply, message):
    with pytest.raises(ValueError, match=message):
        parse_judgement(reply, ["A", "B"])


# ----------------------------------------------------------------------------------------- LLM judge end to end
class JudgeModel(FakeModel):
    """The loopback server's model (its ``TASK: judge`` rule scores the answer text only, so both
    presentation orders must agree) plus faults: ``FAULT_JUDGE_PARTIAL`` in an answer makes the first
    ask omit the last label (exercises the re-ask); ``FAULT_JUDGE_PROSE`` makes every ask add prose."""

    def reply(self, messages):
        user = next((m["content"] for m in messages if m.get("role") == "user"), "")
        if not re.search(r"^TASK: judge$", user, re.M):
            return super().reply(messages)
        body = json.loads(super().reply(messages).rsplit("\n", 1)[0])  # the server's own judge rule
        labels = re.search(r"^(?:Grade|Score) the answers labelled (.*)\.$", user, re.M).group(1).split(", ")
        if "FAULT_JUDGE_PARTIAL" in user and len(messages) <= 2:
            body.pop(labels[-1])
        out = json.dumps(body)
        if "FAULT_JUDGE_PROSE" in user:
            out = "Here are my grades: " + out
        return f"{out}\n{END}"


class RecordingServer(FakeServer):
    """Keeps every chat request body (to check what the judge sends)."""

    def completion(self, body, raw):
        self.bodies.append(body)
        return super().completion(body, raw)


@pytest.fixture()
def server():
    srv = RecordingServer(0)
    srv.bodies = []
    srv.model = JudgeModel()
    srv.start()
    yield srv
    srv.stop()


def at_step(selection, step):
    """The selection with every recipe's selected step set to ``step``."""
    return {**selection, "selected": {r: step for r in selection["selected"]}}


def fake_generations(n_questions=3, steps=(10, 20), special=None):
    gens = []
    for qi in range(n_questions):
        for st in steps:
            for ri, rec in enumerate(RECIPES):
                ans = " ".join(["word"] * (qi + ri)) + (f" {special}" if special and qi == 0 and ri == 1 else "")
                gens.append({"set": "inner_comparison", "qid": f"q{qi}", "question": f"Question {qi}?",
                             "bin": None, "recipe": rec, "checkpoint": f"step-{st:06d}", "step": st,
                             "answer": ans.strip()})
            if st == steps[-1]:
                for ri, rec in enumerate(RECIPES):
                    gens.append({"set": "all", "qid": f"q{qi}", "question": f"Question {qi}?",
                                 "bin": ["0-7", "9-10"][qi % 2], "recipe": rec, "checkpoint": "final", "step": st,
                                 "answer": " ".join(["word"] * (qi + 2 * ri))})
    return gens


def test_llm_judge_end_to_end_two_orders_reask_and_cache(server, tmp_path):
    llm = LLMConfig(backend="openai", base_url=server.base_url, model="fake", cache_dir=str(tmp_path / "cache"),
                    max_retries=1, backoff_base_s=0.0, progress=False, temperature=0.7)
    gens = fake_generations(special="FAULT_JUDGE_PARTIAL")
    jcfg = JudgeConfig(backend="llm", orders=2, group_by="question_step", template_version=1)
    scores, summ = judge_llm(gens, jcfg, llm, seed=3, metrics_path=tmp_path / "m.json")
    groups = 3 * 2 + 3  # (question, step) groups of inner_comparison + the 'all' groups
    assert summ["groups"] == groups and summ["requests"] == 2 * groups and summ["failed_requests"] == 0
    assert summ["llm"]["reasks"] >= 1, "the partial reply was re-asked"
    assert len(scores) == len(gens) and all(s["total"] is not None for s in scores)
    by = {(s["set"], s["qid"], s["step"], s["recipe"]): s for s in scores}
    for g in gens:
        s = by[(g["set"], g["qid"], g["step"], g["recipe"])]
        n = len(g["answer"].split())
        assert s["grammar"] == min(5, n) and s["total"] == s["grammar"] + s["coherence"] + s["specificity"]
        assert set(s["orders"]) == {"0", "1"} and s["orders"]["0"]["position"] + s["orders"]["1"]["position"] == 3
    ag = summ["agreement"]
    assert ag["answers"] == len(gens) and ag["total"]["exact"] == 1.0, "order-independent judge -> full agreement"
    assert set(summ["position_means"]) == {"A", "B", "C", "D"}
    # a second run is served from the cache (no HTTP calls)
    calls = server.stats["chat_calls"]
    scores2, summ2 = judge_llm(gens, jcfg, llm, seed=3)
    assert server.stats["chat_calls"] == calls and summ2["llm"]["cache_hits"] == 2 * groups
    assert [s["total"] for s in scores2] == [s["total"] for s in scores]
    sel = select_checkpoints(scores, "llm", RECIPES, n_boot=200, seed=0)
    assert sel["selection_metric"] == "total" and [c["step"] for c in sel["checkpoint_curve"]["leaner-ori"]] == [10, 20]
    rep = report(scores, "llm", RECIPES, 200, 0, at_step(sel, 20))
    # the LLM's criteria, then the answer statistics every backend reports
    assert rep["metrics"] == ["grammar", "coherence", "specificity", "total", *judge.ANSWER_STATS]
    longest = max(gens, key=lambda g: len(g["answer"].split()))
    ori = rep["recipes"]["ori-ori"]
    assert ori["proxy_empty"]["mean"] == 0 and 0 < ori["proxy_repetition"]["mean"] < 1, "'word word ...' repeats"
    scored = by[(longest["set"], longest["qid"], longest["step"], longest["recipe"])]
    assert scored["proxy_distinct_2"] == pytest.approx(1 / (len(longest["answer"].split()) - 1))
    assert rep["recipes"]["ori-ori"]["total"]["n"] == 3 and rep["selection_metric"] == "total"
    assert rep["recipes"]["ori-ori"]["selected_step"] == 20 and rep["checkpoint_curve"] == sel["checkpoint_curve"]
    md = markdown(rep, "llm", {"judge_model": "fake", "agreement": ag, "position_means": summ["position_means"]})
    assert "sum (LLM, 0-15)" in md and "Position bias" in md and "Proxy" not in md


def test_llm_judge_reports_format_failures_without_dropping(server, tmp_path):
    llm = LLMConfig(backend="openai", base_url=server.base_url, model="fake", cache_dir=str(tmp_path / "c"),
                    max_retries=0, progress=False)
    gens = fake_generations(n_questions=1, steps=(10,), special="FAULT_JUDGE_PROSE")
    scores, summ = judge_llm(gens, JudgeConfig(backend="llm", max_reasks=1), llm, seed=0)
    bad = [s for s in scores if s["total"] is None]
    # inner comparison: one group per recipe (its checkpoints); the faulty reply is leaner-ori's
    assert summ["failures"] == {"format": 1} and summ["unjudged_answers"] == len(bad) == 1
    assert summ["parsed_replies"] == 4 and summ["requests"] == 5
    q = summ["quarantine"]
    assert len(q) == 1 and q[0]["reason"] == "format" and "not a JSON object" in q[0]["error"] and len(q[0]["answers"]) == 1
    assert bad[0]["recipe"] == "leaner-ori" and bad[0]["set"] == "inner_comparison" and len(scores) == len(gens)
    with pytest.raises(LLMFailure, match="max_quarantine_share"):  # above the accepted share the stage fails
        judge_llm(gens, JudgeConfig(backend="llm", max_reasks=1), llm.model_copy(update={"max_quarantine_share": 0.1, "pipeline_check_below_params": 0}), 0)
    sel = select_checkpoints(scores, "llm", RECIPES, 100, 0)
    assert sel["selected"]["leaner-ori"] is None and sel["no_signal"]["leaner-ori"].startswith("no signal")
    answered = [s for s in scores if s["set"] != "all" or sel["selected"][s["recipe"]] is not None]  # as generate
    rep = report(answered, "llm", RECIPES, 100, 0, sel)
    assert rep["checkpoint_curve"]["leaner-ori"][0]["n"] == 0 and rep["recipes"]["ori-ori"]["total"]["n"] == 1
    assert rep["recipes"]["leaner-ori"]["answers"] == 0


def test_study_protocol_groups_shuffled_schema_and_empty_note(server, tmp_path):
    """The default protocol: all answers to a question together (split above judge.max_group), each scored
    once, in a seeded shuffled order, the v2 prompt, a JSON schema, the empty-answer note."""
    llm = LLMConfig(backend="openai", base_url=server.base_url, cache_dir=str(tmp_path / "c"), progress=False)
    gens = fake_generations(n_questions=2, steps=(10, 20, 30, 40, 50, 60))
    gens[0]["answer"] = ""  # an empty answer (the generator makes others too: recipe 0 of question 0)
    cfg = JudgeConfig(backend="llm", max_group=5)
    scores, summ = judge_llm(gens, cfg, llm, seed=1)
    # inner_comparison: one recipe's 6 checkpoints per question -> groups of 5 and 1; all: the 4 recipes together
    assert summ["groups"] == 2 * 4 * 2 + 2 and summ["requests"] == summ["groups"] == summ["parsed_replies"]
    assert all(s["total"] is not None and len(s["orders"]) == 1 for s in scores)
    assert summ["agreement"] is None and summ["template_id"].startswith("judge@v2:")
    bodies = server.bodies
    assert all(b["response_format"]["type"] == "json_schema" for b in bodies)
    schemas = [b["response_format"]["json_schema"]["schema"] for b in bodies]
    assert sorted(len(x["required"]) for x in schemas) == [1] * 8 + [4] * 2 + [5] * 8
    assert schemas[0]["properties"]["A"]["properties"]["grammar"]["enum"] == [0, 1, 2, 3, 4, 5]
    users = [b["messages"][-1]["content"] for b in bodies]
    groups = judge_groups(gens, "question", 5)
    assert sum(EMPTY_ANSWER in u for u in users) == sum(any(not r["answer"] for r in g) for g in groups) > 0
    empty = next(s for s in scores if (s["set"], s["qid"], s["step"], s["recipe"]) ==
                 (gens[0]["set"], gens[0]["qid"], gens[0]["step"], gens[0]["recipe"]))
    assert empty["total"] == 0
    system = bodies[0]["messages"][0]["content"]
    assert "lenient" in system and "Worked example" in system and "0 = unacceptable" in system
    orders = [orders_for(g, 1, 1)[0] for g in groups if len(g) == 5]
    assert any(o != sorted(o) for o in orders), "answers are shown in a shuffled order"
    assert all(len({(r["set"], r["qid"]) for r in g}) == 1 for g in groups)
    assert all(len({r["recipe"] for r in g}) == 1 for g in groups if g[0]["set"] == "inner_comparison")
    assert sorted(len({r["recipe"] for r in g}) for g in groups if g[0]["set"] == "all") == [4, 4]


def test_judge_outage_fails(tmp_path):
    llm = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", cache_dir=str(tmp_path), max_retries=0,
                    progress=False)
    with pytest.raises(LLMFailure, match="connection"):
        judge_llm(fake_generations(n_questions=1, steps=(10,)), JudgeConfig(backend="llm"), llm, seed=0)


def test_backend_registry_and_judge_endpoint_settings():
    assert set(BACKENDS) == {"proxy", "llm"}
    assert BACKENDS["llm"].is_llm and BACKENDS["llm"].main_metric == "total"
    assert not BACKENDS["proxy"].is_llm and BACKENDS["proxy"].higher_is_better["proxy_ref_ppl"] is False
    assert BACKENDS["llm"].metrics == ("grammar", "coherence", "specificity", "total")
    with pytest.raises(ParamsError, match="unknown judge backend 'openai'"):
        validate_section("judge", {"backend": "openai"}, JudgeConfig)
    llm = LLMConfig(model="gpt-4o-mini", temperature=0.7)
    j = judge_llm_config(llm, JudgeConfig().llm)
    assert (j.backend, j.model, j.temperature) == ("openai", "gpt-4o-mini", 0.0)  # replay -> openai, temperature 0
    j = judge_llm_config(llm.model_copy(update={"backend": "local"}),
                         params.validate("judge", {"llm": {"model": "judge-7b", "model_path": "/m/j.gguf"}}).llm)
    assert (j.backend, j.model, j.local.model_path) == ("local", "judge-7b", "/m/j.gguf")


def test_judge_model_change_reruns_only_the_judge():
    from tinyhelen.pipeline import stages_affected_by

    judge_only = stages_affected_by(["judge.llm.model"], REPO)
    corpus = {"simplify", "leaner_glue", "leaner_eval", "leaner_corpus"}
    assert "judge" in judge_only and not corpus & judge_only
    assert corpus | {"judge"} <= stages_affected_by(["llm.model"], REPO)
    assert "judge" in stages_affected_by(["llm.local.model_path"], REPO)


# ----------------------------------------------------------------------------------------- proxy + report
def test_reference_lm_and_proxy_metrics():
    lm = BigramLM(0.75).fit(["The cat sat on the mat. The dog sat on the rug.", "A cat and a dog play."] * 20)
    lm.finalize()
    fluent, scrambled = lm.perplexity("The cat sat on the rug."), lm.perplexity("rug the on sat cat the.")
    assert fluent < scrambled and 0 < lm.perplexity("") < float("inf")
    assert lm.perplexity("zebra quantum") > fluent  # unknown words get a finite, high perplexity
    p = proxy_scores("the cat sat the cat sat the cat sat", "Where did the cat sit?", lm)
    assert p["proxy_repetition"] == pytest.approx(4 / 7) and p["proxy_distinct_1"] == pytest.approx(3 / 9)
    assert p["proxy_q_overlap"] == pytest.approx(1 / 2)  # content words {cat, sit}: 'cat' found
    e = proxy_scores("  ... ", "Why?", lm)
    assert e["proxy_len_words"] == 0 and e["proxy_distinct_2"] == 0 and e["proxy_repetition"] == 0
    assert e["proxy_ref_ppl"] is None and e["proxy_empty"] == 1 and p["proxy_empty"] == 0


def test_answer_statistics_by_hand():
    """The statistics every backend reports (``base_record``): empty, repeated 3-grams, distinct-2, overlap."""
    from tinyhelen.exp2.proxy_judge import answer_stats, base_record

    s = answer_stats("the cat sat the cat sat the cat", "Where did the cat sit?")
    # 3-grams: (the cat sat) (cat sat the) (sat the cat) then all three again -> 3 of 6 repeat
    assert s["proxy_repetition"] == pytest.approx(3 / 6) and s["proxy_distinct_2"] == pytest.approx(3 / 7)
    assert s["proxy_q_overlap"] == pytest.approx(1 / 2) and s["proxy_empty"] == 0  # content words {cat, sit}
    rec = base_record({"set": "all", "qid": "q", "recipe": "r", "step": 1, "answer": " \n ", "question": "Why?"})
    assert rec["proxy_empty"] == 1 and rec["proxy_distinct_2"] == 0 and set(judge.ANSWER_STATS) <= set(rec)


def test_heldout_answers_are_reported_apart_from_leaner_eval():
    """Answers of the held-out prompts (set ``heldout``) get their own per-recipe figures in the summary, the
    typed result, its metrics and the report card; the Leaner-Eval table does not mix them in."""
    from tinyhelen.exp2.proxy_judge import base_record
    from tinyhelen.exp2.result import Exp2Result
    from tinyhelen.exp2.tables import card as exp2_card

    gens = [g for g in fake_generations() if g["set"] == "all"]
    gens += [{**g, "set": "heldout", "qid": f"h{g['qid']}", "bin": None, "answer": ""} for g in gens
             if g["recipe"] != "ori-ori"]
    scores = [{**base_record(g), "toy": 1.0} for g in gens]
    sel = {"backend": "proxy", "selection_metric": "proxy_ref_ppl", "checkpoint_curve": {},
           "selected": {r: 20 for r in RECIPES}}
    for s in scores:
        s["proxy_ref_ppl"] = None if s["proxy_empty"] else 10.0
    rep = report(scores, "proxy", RECIPES, 100, 0, sel)
    assert rep["recipes"]["leaner-ori"]["answers"] == 3 and rep["recipes"]["leaner-ori"]["proxy_empty"]["mean"] == 0
    assert rep["heldout"]["leaner-ori"]["answers"] == 3 and rep["heldout"]["leaner-ori"]["proxy_empty"]["mean"] == 1
    assert "ori-ori" not in rep["heldout"]
    e2 = Exp2Result.build(rep, judge_is_llm=False, main_metric="proxy_ref_ppl", instruct_source="code_pairs",
                          template=None, questions=None, tune_reports={}, non_embedding_params=None)
    assert e2.recipe("leaner-ori").heldout["proxy_empty"].mean == 1 and e2.recipe("ori-ori").heldout == {}
    assert e2.metrics()["recipes"]["leaner-ori"]["heldout"]["proxy_empty"] == 1
    card = "\n".join(exp2_card(e2))
    assert "Held-out prompts" in card and sum(ln.startswith("| leaner-ori ") for ln in card.splitlines()) == 2
    assert "Held-out prompts of each recipe's own tuning data" in markdown(rep, "proxy")


def test_checkpoint_selection_skips_mostly_empty_checkpoints():
    def rec(step, ppl, recipe="ori-ori"):
        return {"set": "inner_comparison", "qid": f"q{step}-{ppl}", "bin": None, "recipe": recipe, "step": step,
                "proxy_ref_ppl": ppl, "proxy_empty": float(ppl is None)}
    scores = ([rec(10, 50.0)] + [rec(10, None)] * 3          # one fluent-looking answer, 75% empty
              + [rec(20, 400.0), rec(20, 300.0), rec(20, None)]  # 33% empty
              + [rec(30, 900.0)] * 3)
    sel = select_checkpoints(scores, "proxy", ["ori-ori"], n_boot=100, seed=0)
    curve = {c["step"]: c for c in sel["checkpoint_curve"]["ori-ori"]}
    assert curve[10]["unscored_share"] == 0.75 and curve[10]["n"] == 1 and curve[20]["mean"] == 350.0
    assert sel["selected"]["ori-ori"] == 20
    assert select_checkpoints(scores, "proxy", ["ori-ori"], 100, 0, max_unscored_share=1.0)["selected"]["ori-ori"] == 10



def test_checkpoint_selection_without_a_signal_selects_nothing_and_the_claims_are_not_measured():
    """Every checkpoint's answers (nearly) unscored: no step is selected (not the one with the fewest unscored
    answers), the recipe says why, generation skips it and both EXP2 claims are not measured with that reason."""
    from tinyhelen.report.claims import NOT_MEASURED, ReportConfig, claims_exp2

    def rec(step, ppl, recipe):
        return {"set": "inner_comparison", "qid": f"q{step}-{ppl}", "bin": None, "recipe": recipe, "step": step,
                "proxy_ref_ppl": ppl, "proxy_empty": float(ppl is None)}
    scores = [rec(10, None, "ori-ori"), rec(20, None, "ori-ori"), rec(20, 5.0, "ori-ori")]
    scores += [rec(s, 9.0, r) for r in RECIPES[:3] for s in (10, 20)]
    sel = select_checkpoints(scores, "proxy", RECIPES, 100, 0, max_unscored_share=0.2)
    assert sel["selected"] == {"leaner-leaner": 10, "leaner-ori": 10, "ori-leaner": 10, "ori-ori": None}
    assert sel["no_signal"]["ori-ori"].startswith("no signal: none of its 2 checkpoints has proxy_ref_ppl on at "
                                                  "least 80% of its inner-comparison answers (at best 50%)")
    answers = [{**rec(10, 7.0, r), "set": "all", "bin": "0-7"} for r in RECIPES[:3]]
    e2 = typed(report(answers, "proxy", RECIPES, 100, 0, sel), "proxy")
    assert e2.recipe("ori-ori").selected_step is None and e2.recipe("ori-ori").no_signal == sel["no_signal"]["ori-ori"]
    assert e2.metrics()["recipes"]["ori-ori"]["selected_step"] is None
    llm = e2.model_copy(update={"judge_is_llm": True})  # even an LLM judge measures nothing here
    claims = claims_exp2(llm, ReportConfig())
    assert [c.verdict for c in claims] == [NOT_MEASURED] * 2
    assert all("checkpoint selection of ori-ori: no signal" in c.why for c in claims), [c.why for c in claims]


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    vals = [0.0, 1.0, 2.0, 3.0, 10.0, 4.0, 2.0]
    a, b = bootstrap_ci(vals, 500, seed=1), bootstrap_ci(vals, 500, seed=1)
    assert a == b and a[1] < a[0] < a[2]
    assert bootstrap_ci([2.0] * 5, 100, 0) == (2.0, 2.0, 2.0)


def test_proxy_judge_and_report(prepared, tmp_path):
    cfg = JudgeConfig(proxy=judge.ProxyConfig(ref_corpora=[str(prepared / "corpus/leaner/train.jsonl"),
                                                           str(prepared / "corpus/ori/train.jsonl")],
                                              ref_max_words=20000))
    gens = fake_generations()
    scores, summ = judge_proxy(gens, cfg)
    assert summ["backend"] == "proxy" and "not LLM" in summ["note"] and summ["reference_lm"]["train_words"] >= 20000
    assert len(scores) == len(gens) and all(set(judge.PROXY_METRICS) <= set(s) for s in scores)
    assert not any(k in s for s in scores for k in judge.CRITERIA), "proxy records never carry LLM criteria"
    sel = select_checkpoints(scores, "proxy", RECIPES, n_boot=200, seed=0)
    rep = report(scores, "proxy", RECIPES, 200, 0, at_step(sel, 20))
    assert rep["selection_metric"] == "proxy_ref_ppl" and rep["recipes"]["leaner-leaner"]["answers"] == 3
    assert set(rep["by_bin"]["ori-ori"]) == {"0-7", "9-10"}
    md = markdown(rep, "proxy")
    assert "Proxy metrics, not LLM-judge scores" in md and "grammar" not in md.split("## Per recipe")[1]
    with pytest.raises(Exception, match="selection_metric"):
        select_checkpoints(scores, "proxy", RECIPES, 100, 0, selection_metric="total")
    with pytest.raises(InputError, match="step 10 was selected: rerun generate"):  # answers of another checkpoint
        report(scores, "proxy", RECIPES, 100, 0, at_step(sel, 10))
    plot_png(typed(rep, "proxy"), tmp_path / "exp2.png")
    assert (tmp_path / "exp2.png").stat().st_size > 1000


def test_toy_backend_registered_here_runs_through_judging_selection_report_and_card(tmp_path, monkeypatch):
    """A third judge backend, registered for this test only (one ``JudgeBackend`` in ``BACKENDS``, its metric's
    direction and label): the params accept it, and the judge, checkpoint selection, EXP2 report, typed result,
    report card table and claims all read it from the registry (docs/extending.md, "A judge backend")."""
    from tinyhelen.exp2.judge import HIGHER_IS_BETTER, METRIC_LABELS, JudgeBackend
    from tinyhelen.exp2.proxy_judge import base_record
    from tinyhelen.report.claims import NOT_MEASURED, ReportConfig, claims_exp2
    from tinyhelen.exp2.tables import card as card_exp2
    from tinyhelen.exp2.result import Exp2Result

    def score_toy(gens, cfg, llm, seed):  # longer answers score higher; a later checkpoint breaks ties
        recs = [{**base_record(r), "backend": "toy", "toy_words": len(r["answer"].split()) + r["step"] / 100}
                for r in gens]
        return recs, {"backend": "toy", "answers": len(recs), "provenance": {"backend": "toy", "source": "proxy"}}

    monkeypatch.setitem(judge.BACKENDS, "toy", JudgeBackend("toy", ("toy_words",), "toy_words", False,
                                                            "answer length (a toy)", score_toy))
    monkeypatch.setitem(HIGHER_IS_BETTER, "toy_words", True)
    monkeypatch.setitem(METRIC_LABELS, "toy_words", "toy: answer length (words)")
    cfg = validate_section("judge", {"backend": "toy"}, JudgeConfig)
    paths = []
    for rec in RECIPES:
        paths.append(tmp_path / f"{rec}.jsonl")
        paths[-1].write_text("".join(json.dumps(g) + "\n" for g in fake_generations() if g["recipe"] == rec))
    scores, summ = judge.judge_answers(paths, tmp_path / "judge", cfg, LLMConfig(), seed=0)
    assert summ["backend"] == "toy" and (tmp_path / "judge/scores.jsonl").read_text().count("toy_words") == len(scores)
    sel = select_checkpoints(scores, "toy", RECIPES, n_boot=100, seed=0)
    assert sel["selection_metric"] == "toy_words" and set(sel["selected"].values()) == {20}
    rep = report(scores, "toy", RECIPES, 100, 0, sel)
    assert rep["metrics"] == ["toy_words", *judge.ANSWER_STATS]  # base_record: the answer statistics
    assert rep["higher_is_better"]["toy_words"] is True
    assert rep["recipes"]["ori-ori"]["toy_words"]["mean"] > rep["recipes"]["leaner-leaner"]["toy_words"]["mean"]
    md = markdown(rep, "toy")
    assert "Proxy metrics, not LLM-judge scores" in md and "toy: answer length (words)" in md
    backend = judge.BACKENDS["toy"]  # as stages/exp2_report.py builds the typed result
    e2 = Exp2Result.build(rep, judge_is_llm=backend.is_llm, main_metric=backend.main_metric,
                          instruct_source="code_pairs", template=None, questions=None, tune_reports={},
                          non_embedding_params=None)
    assert "toy_words (main)" in "\n".join(card_exp2(e2))
    claims = claims_exp2(e2, ReportConfig())
    assert claims and all(c.verdict == NOT_MEASURED and "judge backend `toy`" in c.why for c in claims)
