"""Report NLP library: sections, sentences, lexicon NER, ConText assertion status, roll-up, data files.

These run the real lexicon backend and medspaCy ConText (no network). ICD linking uses the lexical linker
here; the MiniLM ranking is covered in test_nlp_linking.py.
"""

from __future__ import annotations

import pytest
from medsearch_workers.nlp import Analyzer, split_sections, split_sentences
from medsearch_workers.nlp.assertion import ContextRulesError, load_rule_dicts, pipeline
from medsearch_workers.nlp.lexicon import (
    LexiconError,
    default_concepts,
    finding_for_code,
    fuzzy_concept,
    icd_index_terms,
    load_concepts,
    load_extras,
    typo_distance,
)
from medsearch_workers.nlp.linking import LexicalOnlyLinker


def is_billable(code: str) -> bool:
    """A valid ICD-10-CM code with no children (a billable leaf)."""
    import simple_icd_10_cm as icd

    return bool(icd.is_valid_item(code) and icd.is_leaf(code))


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(linker=LexicalOnlyLinker())


def status(analyzer: Analyzer, text: str) -> dict[str, str]:
    """concept/name -> assertion of each entity (conditions only)."""
    res = analyzer.analyze(text)
    return {e.concept or e.name: e.assertion for e in res.entities if e.category == "MEDICAL_CONDITION"}


# ------------------------------------------------------------------------------------ sections, sentences


def test_sections_labeled_and_unlabeled() -> None:
    text = (
        "EXAMINATION: CHEST (PA AND LAT)\nINDICATION: Cough.\nCOMPARISON: None.\nTECHNIQUE: PA and lateral.\n"
        "FINDINGS: Heart size is normal.\nIMPRESSION:\n1. No acute process."
    )
    secs = split_sections(text)
    assert [s.name for s in secs] == ["EXAMINATION", "INDICATION", "COMPARISON", "TECHNIQUE", "FINDINGS", "IMPRESSION"]
    assert text[secs[4].start : secs[4].end] == "Heart size is normal."
    assert text[secs[5].start : secs[5].end] == "1. No acute process."
    plain = split_sections("Heart size normal. Lungs clear.")
    assert [(s.name, s.start) for s in plain] == [("BODY", 0)]
    inline = split_sections("History: fever. Findings: small effusion. Impression: effusion.")
    assert [s.name for s in inline] == ["INDICATION", "FINDINGS", "IMPRESSION"]
    bare = split_sections("FINDINGS\nLungs are clear.\n\nIMPRESSION\nNormal chest.")
    assert [s.name for s in bare] == ["FINDINGS", "IMPRESSION"]


def test_sentences_keep_numbers_abbreviations_and_list_markers() -> None:
    text = "Nodule measures 1.5 cm. Seen by Dr. Smith vs. prior.\n1. Cardiomegaly.\n2. No effusion; small PTX"
    got = [text[a:b] for a, b in split_sentences(text)]
    assert got == [
        "Nodule measures 1.5 cm.",
        "Seen by Dr. Smith vs. prior.",
        "1. Cardiomegaly.",
        "2. No effusion;",
        "small PTX",
    ]


# ------------------------------------------------------------------------------------------ assertion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No pleural effusion or pneumothorax.", {"pleural_effusion": "absent", "pneumothorax": "absent"}),
        ("There is no focal consolidation, effusion, or pneumothorax.",
         {"consolidation": "absent", "pleural_effusion": "absent", "pneumothorax": "absent"}),
        ("Without pneumothorax.", {"pneumothorax": "absent"}),
        ("Negative for cardiomegaly.", {"cardiomegaly": "absent"}),
        ("Lungs are free of consolidation.", {"consolidation": "absent"}),
        ("Interval resolution of the left effusion.", {"pleural_effusion": "absent"}),
        ("The right pneumothorax has resolved.", {"pneumothorax": "absent"}),
        ("Pneumothorax is not seen.", {"pneumothorax": "absent"}),
        ("No change in the small left effusion.", {"pleural_effusion": "present"}),
        ("Not only is there cardiomegaly but also edema.", {"cardiomegaly": "present", "pulmonary_edema": "present"}),
        ("No pneumothorax, but there is a small right effusion.",
         {"pneumothorax": "absent", "pleural_effusion": "present"}),
        ("Possible early pneumonia.", {"pneumonia": "uncertain"}),
        ("Pneumonia cannot be excluded.", {"pneumonia": "uncertain"}),
        ("Cannot exclude a small pneumothorax.", {"pneumothorax": "uncertain"}),
        ("Findings may represent atelectasis.", {"atelectasis": "uncertain"}),
        ("Opacity suggestive of pneumonia.", {"lung_opacity": "present", "pneumonia": "uncertain"}),
        ("Questionable small nodule.", {"lung_nodule": "uncertain"}),
        # alternatives named without a hedge are each asserted (a differential); a hedge before them doubts both
        ("Atelectasis versus pneumonia.", {"atelectasis": "present", "pneumonia": "present"}),
        ("Possible atelectasis versus pneumonia.", {"atelectasis": "uncertain", "pneumonia": "uncertain"}),
        ("Evaluate for pneumothorax.", {"pneumothorax": "hypothetical"}),
        ("Cough, r/o pneumonia.", {"cough": "present", "pneumonia": "hypothetical"}),
        ("History of COPD.", {"copd": "historical"}),
        ("Prior right pneumothorax.", {"pneumothorax": "historical"}),
        ("Compared with the prior study, there is a new effusion.", {"pleural_effusion": "present"}),
        ("Family history of lung cancer.", {"lung_cancer": "family"}),
        ("Old healed left rib fractures.", {"rib_fracture": "present"}),
        ("Stable small left effusion.", {"pleural_effusion": "present"}),
        ("Mild cardiomegaly is possible.", {"cardiomegaly": "uncertain"}),
        ("Pneumothorax is suspected.", {"pneumothorax": "uncertain"}),
        ("A small left effusion may be present.", {"pleural_effusion": "uncertain"}),
        ("There is possible mild cardiomegaly.", {"cardiomegaly": "uncertain"}),
        ("Pneumonia is possible, effusion is present.", {"pneumonia": "uncertain", "pleural_effusion": "present"}),
    ],
)  # fmt: skip
def test_assertion_status(analyzer: Analyzer, text: str, expected: dict[str, str]) -> None:
    assert status(analyzer, text) == expected


@pytest.mark.parametrize(
    ("text", "concept", "expected"),
    [
        ("The cardiac silhouette is enlarged.", "cardiomegaly", "present"),
        ("Heart size is mildly enlarged.", "cardiomegaly", "present"),
        ("Heart size is normal.", "cardiomegaly", "absent"),
        ("The heart is not enlarged.", "cardiomegaly", "absent"),
        ("Normal cardiomediastinal silhouette.", "cardiomegaly", "absent"),
        ("The cardiomediastinal silhouette is within normal limits.", "cardiomegaly", "absent"),
        ("Heart size is borderline.", "cardiomegaly", "present"),  # a grade (MeSH: Cardiomegaly/borderline)
        ("Borderline cardiomegaly.", "cardiomegaly", "present"),
        ("Heart size mildly enlarged for technique.", "cardiomegaly", "present"),
        ("Lungs are clear.", "consolidation", "absent"),
        ("No focal consolidation.", "consolidation", "absent"),
        ("Costophrenic angles are sharp.", "pleural_effusion", "absent"),
        ("Mild pulmonary vascular congestion.", "pulmonary_edema", "present"),
        ("Hyperexpanded lungs.", "hyperinflation", "present"),  # a sign, not emphysema
        ("Degenerative changes of the thoracic spine.", "degenerative_spine", "present"),
        ("Calcified granuloma.", "granuloma", "present"),
        ("Atherosclerotic aorta.", "aortic_atherosclerosis", "present"),
        ("Tortuous aorta.", "tortuous_aorta", "present"),
        ("Compression deformity of T12.", "vertebral_fracture", "present"),
        ("Biapical pleural thickening.", "pleural_thickening", "present"),
        ("Small hiatal hernia.", "hiatal_hernia", "present"),
        ("Mild dextroscoliosis.", "scoliosis", "present"),
        ("Exaggerated thoracic kyphosis.", "kyphosis", "present"),
        ("Pericardial effusion is not excluded.", "pericardial_effusion", "uncertain"),
        ("Heart size is at the upper limits of normal.", "cardiomegaly", "uncertain"),
        ("Right upper lobe mass.", "lung_mass", "present"),
        ("Lungs are otherwise clear.", "consolidation", "absent"),
        ("Multiple old right rib fractures are again seen.", "rib_fracture", "present"),
        ("Aortic knob calcifications.", "aortic_calcification", "present"),  # a sign, not atherosclerosis
        ("Atherosclerotic calcifications of the thoracic aorta.", "aortic_atherosclerosis", "present"),
        ("Findings suggest COPD.", "copd", "uncertain"),
        ("Cardiomediastinal and hilar contours are normal.", "cardiomegaly", "absent"),
        ("Cardiac silhouette size is upper limits of normal.", "cardiomegaly", "uncertain"),
        ("Loss of height of T12.", "vertebral_fracture", "present"),
    ],
)  # fmt: skip
def test_radiology_phrasing(analyzer: Analyzer, text: str, concept: str, expected: str) -> None:
    assert status(analyzer, text).get(concept) == expected


def test_pericardial_effusion_is_not_a_pleural_effusion(analyzer: Analyzer) -> None:
    assert status(analyzer, "Small pericardial effusion.") == {"pericardial_effusion": "present"}


def test_no_finding_from_unrelated_phrases(analyzer: Analyzer) -> None:
    assert "degenerative_spine" not in status(analyzer, "Severe degenerative changes of both shoulders.")
    assert analyzer.analyze("Mild interstitial prominence.").icd10_positive == []  # a sign, not fibrosis
    assert analyzer.analyze("No mass effect.").icd10_positive == []
    # an ICD inclusion term that is a list ("Cardiac, heart or myocardial failure NOS") is no phrase
    assert analyzer.analyze("The cardiac and mediastinal silhouettes are stable.").icd10_positive == []


# -------------------------------------------------------------------------------------------- roll-up


def test_report_rollup(analyzer: Analyzer) -> None:
    text = (
        "INDICATION: Cough and fever, evaluate for pneumonia. History of COPD.\n"
        "COMPARISON: Chest radiograph with right pleural effusion.\n"
        "FINDINGS: The cardiac silhouette is enlarged. Small left pleural effusion. No pneumothorax. "
        "Possible left basilar atelectasis. Heart size stable. Old healed left rib fractures.\n"
        "IMPRESSION: Cardiomegaly with small left effusion. No pneumonia."
    )
    res = analyzer.analyze(text)
    assert set(res.sections) == {"INDICATION", "COMPARISON", "FINDINGS", "IMPRESSION"}
    assert res.icd10_positive == ["I51.7", "J90", "S22.42XA"]  # laterality + multiplicity of rib fractures
    assert sorted(res.icd10_negative) == ["J18.9", "J93.9"]
    assert res.icd10_uncertain == ["J98.11"]
    # nothing from INDICATION or COMPARISON is a finding; symptoms are kept as facets
    assert "J44.9" not in res.icd10_positive + res.icd10_negative + res.icd10_uncertain
    assert sorted(res.positive_symptoms) == ["cough", "fever"]
    assert "cardiomegaly" in res.positive_signs and "pleural effusion" in res.positive_signs
    assert "pneumothorax" in res.negative_diagnoses and "pneumonia" in res.negative_diagnoses
    assert "rib fracture" in res.positive_diagnoses
    ent = next(e for e in res.entities if e.concept == "pneumothorax")
    assert ent.section == "FINDINGS" and text[ent.start : ent.end] == ent.text
    d = ent.to_dict()
    assert set(d) >= {"text", "start", "end", "category", "type", "score", "section", "traits", "icd10"}
    assert {"name": "NEGATION", "score": 1.0} in d["traits"]
    assert d["icd10"][0]["code"] == "J93.9"


def test_positive_wins_over_negative_and_indication_option() -> None:
    text = "INDICATION: Pneumonia.\nFINDINGS: No effusion. Small right effusion on the lateral view."
    res = Analyzer(linker=LexicalOnlyLinker()).analyze(text)
    assert res.icd10_positive == ["J90"] and res.icd10_negative == []
    with_indication = Analyzer(linker=LexicalOnlyLinker(), indication_positive=True).analyze(text)
    assert with_indication.icd10_positive == ["J18.9", "J90"]


def test_empty_and_findingless_text(analyzer: Analyzer) -> None:
    for text in ("", "   ", "PA and lateral views of the chest were obtained."):
        res = analyzer.analyze(text)
        assert res.icd10_positive == res.icd10_negative == res.icd10_uncertain == []


def test_batch_equals_single(analyzer: Analyzer) -> None:
    texts = ["No effusion.", "Mild cardiomegaly.", "Possible pneumonia."]
    batch = [r.to_dict() for r in analyzer.analyze_many(texts)]
    single = [analyzer.analyze(t).to_dict() for t in texts]
    assert batch == single


# ---------------------------------------------------------------------------------------------- data


def test_lexicon_codes_are_billable_icd10cm_leaves() -> None:
    bad = [
        (c.id, code)
        for c in default_concepts()
        for code in [c.code, *c.codes.values()]
        if code and not is_billable(code)
    ]
    assert bad == []
    assert finding_for_code("S22.42XA") == "fracture"
    assert finding_for_code("J90") == "pleural_effusion"
    assert finding_for_code("J18.1") == "pneumonia"  # by its category, J18


def test_icd_index_terms_are_specific_phrases() -> None:
    terms = icd_index_terms()
    assert terms["atelectasis"] == "J98.11"
    assert terms["pleural effusion"] == "J90"
    for generic in ("lateral", "other", "disease", "presence of"):
        assert generic not in terms


def test_lexicon_file_errors_name_the_concept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "lex.yaml"
    bad.write_text("concepts:\n  - id: x\n    patterns: ['(unclosed']\n")
    with pytest.raises(LexiconError, match=r"concept 'x'.*invalid regular expression"):
        load_concepts(bad)
    bad.write_text("concepts:\n  - id: x\n    patterns: []\n")
    with pytest.raises(LexiconError, match="'patterns' is empty"):
        load_concepts(bad)


def test_context_rules_file_is_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = load_rule_dicts()
    assert {r["category"] for r in rules} >= {"NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HYPOTHETICAL",
                                              "HISTORICAL", "FAMILY", "PSEUDO", "TERMINATE"}  # fmt: skip
    bad = tmp_path / "rules.yaml"
    bad.write_text("context_rules:\n  - {literal: x, category: NEGATED_EXISTENCE, pattern: [{LOWER: {IN: [no]}}]}\n")
    with pytest.raises(ContextRulesError, match="not a string"):
        load_rule_dicts(bad)
    bad.write_text("context_rules:\n  - {literal: x, category: MAYBE}\n")
    with pytest.raises(ContextRulesError, match="unknown category"):
        load_rule_dicts(bad)
    _nlp, context = pipeline()
    assert len(context.rules) == len(rules)


# ------------------------------------------------------------- real-report phrasing (probe-set behaviours)


def positive_findings(analyzer: Analyzer, text: str) -> set[str]:
    return {f for c in analyzer.analyze(text).icd10_positive if (f := finding_for_code(c))}


def test_misspelled_findings_match_with_one_typo(analyzer: Analyzer) -> None:
    assert typo_distance("cardiomegally", "cardiomegaly", 1) == 1
    assert typo_distance("effusoin", "effusion", 1) == 1  # adjacent swap
    assert fuzzy_concept("pneumothorx") == "pneumothorax"
    assert fuzzy_concept("Atelectsis") == "atelectasis"
    assert fuzzy_concept("diffusion") is None  # two edits from "effusion"
    assert fuzzy_concept("tardiomegaly") is None  # the first letter must match
    assert positive_findings(analyzer, "Mild cardiomegally. No effusion or pneumothorx.") == {"cardiomegaly"}
    assert status(analyzer, "No pneumothorx.") == {"pneumothorax": "absent"}


def test_also_asserts_a_second_concept_with_the_same_status(analyzer: Analyzer) -> None:
    assert positive_findings(analyzer, "Kyphoscoliosis of the thoracic spine.") == {"kyphosis", "scoliosis"}
    res = analyzer.analyze("No kyphoscoliosis.")
    assert {e.concept: e.assertion for e in res.entities} == {"kyphoscoliosis": "absent", "kyphosis": "absent"}
    assert res.icd10_positive == []


def test_generic_fracture_takes_its_code_from_the_sentence(analyzer: Analyzer) -> None:
    codes = analyzer.analyze("Deformity of the left 6th rib consistent with healed fracture.").icd10_positive
    assert codes and codes[0].startswith("S22.")
    assert analyzer.analyze("Old fracture of the right clavicle.").icd10_positive == ["S42.009A"]
    assert analyzer.analyze("Healed fracture at T12.").icd10_positive == ["M48.50XA"]
    assert analyzer.analyze("Healed fracture.").icd10_positive == ["T14.8XXA"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Right lower lobe infiltrate.", set()),  # a sign without a finding code
        ("No infiltrate.", set()),
        ("Bibasilar airspace disease, likely atelectasis.", {"atelectasis"}),
        ("Streaky infiltrates at the bases, probably atelectasis.", {"atelectasis"}),
        ("Left lower lobe consolidation consistent with pneumonia.", {"pneumonia"}),
        ("Patchy airspace disease in the left base, concerning for pneumonia.", set()),  # pneumonia uncertain
        ("Chronic interstitial changes.", set()),  # markings, not fibrosis
        ("Remote left rib fractures.", {"fracture"}),  # old, but on this film
        ("Increased AP diameter of the chest.", set()),  # hyperinflation, a sign
        ("Interval increase in heart size.", {"cardiomegaly"}),
        ("Thoracic spine curvature.", {"scoliosis"}),
        ("Anterior wedging of T7.", {"fracture"}),
        ("Mild loss of height of a lower thoracic vertebral body.", {"fracture"}),
        ("Nodular density at the left base, likely a nipple shadow.", set()),  # uncertain: a mimic is named
        ("Nodular opacity in the right mid lung, may be due to overlapping vessels.", set()),
        ("Right lower lobe nodule, likely a granuloma.", {"nodule_mass", "granuloma"}),
    ],
)
def test_real_report_phrasing(analyzer: Analyzer, text: str, expected: set[str]) -> None:
    assert positive_findings(analyzer, text) == expected


def test_a_comma_ends_the_scope_of_backward_uncertainty(analyzer: Analyzer) -> None:
    got = status(analyzer, "Cardiomegaly, superimposed edema not excluded.")
    assert got == {"cardiomegaly": "present", "pulmonary_edema": "uncertain"}
    got = status(analyzer, "Diffuse opacities likely pulmonary edema, superimposed infection cannot be excluded.")
    assert got["pulmonary_edema"] == "present" and got["pneumonia"] == "uncertain"
    got = status(analyzer, "Small effusion or pneumothorax cannot be excluded.")
    assert got == {"pleural_effusion": "uncertain", "pneumothorax": "uncertain"}


def test_lexicon_extras_are_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    extras = load_extras()
    assert "cardiomegaly" in extras["cardiomegaly"].fuzzy
    assert extras["kyphoscoliosis"].also == ("kyphosis",)
    bad = tmp_path / "lex.yaml"
    bad.write_text("concepts:\n  - id: x\n    patterns: [x]\n    also: [nope]\n")
    with pytest.raises(LexiconError, match="unknown concepts"):
        load_extras(bad)
    bad.write_text("concepts:\n  - id: x\n    patterns: [x]\n    fuzzy: [short]\n")
    with pytest.raises(LexiconError, match="8\\+ letters"):
        load_extras(bad)
    bad.write_text("concepts:\n  - id: x\n    patterns: [x]\n    context_codes: [{pattern: '(', concept: x}]\n")
    with pytest.raises(LexiconError, match="context_codes pattern"):
        load_extras(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # MIMIC-style phrasing
        ("Heart size is stable, mildly enlarged.", {"cardiomegaly"}),
        ("The heart is at least moderately enlarged.", {"cardiomegaly"}),
        ("Large paraesophageal hernia.", {"hiatal_hernia"}),
        ("Right upper lobe cavitary lesion.", {"nodule_mass"}),
        ("Right lower lobe opacity, consistent with aspiration.", {"pneumonia"}),
        ("Status post needle aspiration of the left breast.", set()),
        ("Age-indeterminate compression fracture of T12.", {"fracture"}),  # dates the fracture, no doubt
        ("Left lower lobe volume loss.", set()),  # a sign (of atelectasis, surgery, fibrosis)
        ("Postoperative changes in the right upper hemithorax with volume loss.", set()),  # after a resection
        ("Two or three healed left rib fractures.", {"fracture"}),  # a count, not alternatives
    ],
)
def test_mimic_style_phrasing(analyzer: Analyzer, text: str, expected: set[str]) -> None:
    assert positive_findings(analyzer, text) == expected


def test_alternatives_are_asserted_unless_hedged(analyzer: Analyzer) -> None:
    """A differential ("A or B", "A versus B", "A and/or B") names each alternative as a finding of the film (the
    convention of NLM's MeSH indexing of the IU reports); a hedge before the list doubts every alternative."""
    got = status(analyzer, "Right basilar opacity, atelectasis or pneumonia.")
    assert got["atelectasis"] == "present" and got["pneumonia"] == "present"
    assert status(analyzer, "Bibasilar atelectasis or scarring.")["atelectasis"] == "present"
    assert status(analyzer, "Small effusion and/or pleural thickening.")["pleural_effusion"] == "present"
    got = status(analyzer, "Opacity which may represent atelectasis or pneumonia.")
    assert got["atelectasis"] == "uncertain" and got["pneumonia"] == "uncertain"
    got = status(analyzer, "Streaky opacities, possibly due to airspace disease or atelectasis.")
    assert got["atelectasis"] == "uncertain"
    got = status(analyzer, "Opacities may be compatible with scarring or subsegmental atelectasis.")
    assert got["atelectasis"] == "uncertain"
    # a negation before the list wins
    assert status(analyzer, "No pleural effusion or pneumothorax.") == {
        "pleural_effusion": "absent",
        "pneumothorax": "absent",
    }
    got = status(analyzer, "Left basilar opacity, likely atelectasis or pneumonia.")
    assert got["atelectasis"] == "present" and got["pneumonia"] == "present"


def test_backward_hedges_after_the_finding(analyzer: Analyzer) -> None:
    got = status(analyzer, "Patchy basilar opacities may reflect atelectasis, but infection is difficult to exclude.")
    assert got["pneumonia"] == "uncertain"
    got = status(analyzer, "Opacity is likely atelectasis, though pneumonia is not entirely excluded.")
    assert got["atelectasis"] == "present" and got["pneumonia"] == "uncertain"
    got = status(analyzer, "Left lower lobe opacity, concerning for pneumonia, atelectasis could also contribute.")
    assert got["atelectasis"] == "uncertain"


def test_unless_after_is_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "rules.yaml"
    bad.write_text("context_rules:\n  - {literal: or, category: POSSIBLE_EXISTENCE, unless_after: likely}\n")
    with pytest.raises(ContextRulesError, match="unless_after"):
        load_rule_dicts(bad)


# ------------------------------------------------------------------ conventions measured on the IU reports (#15)


@pytest.mark.parametrize(
    "text",
    [
        "The lungs are clear of focal airspace disease, pneumothorax, or pleural effusion.",
        "The lungs are grossly clear of focal airspace disease, pneumothorax, pleural effusion.",
        "The lungs are otherwise clear of focal infiltrate, pneumothorax, or pleural effusion.",
        "The lungs are free of focal airspace disease, pneumothorax or pleural effusion.",
        "Lungs are well expanded without focal consolidation, pleural effusion, or pneumothorax.",
    ],
)
def test_a_negation_cue_covers_a_coordinated_list(analyzer: Analyzer, text: str) -> None:
    got = status(analyzer, text)
    assert got["pneumothorax"] == "absent" and got["pleural_effusion"] == "absent"
    assert analyzer.analyze(text).icd10_positive == []


def test_a_normal_predicate_covers_a_coordinated_subject(analyzer: Analyzer) -> None:
    got = status(analyzer, "Heart size and pulmonary vascular engorgement appear within limits of normal.")
    assert got["pulmonary_edema"] == "absent"
    got = status(analyzer, "The cardiomediastinal silhouette and pulmonary vasculature are within normal limits.")
    assert "pulmonary_edema" not in got or got["pulmonary_edema"] == "absent"


@pytest.mark.parametrize(
    ("text", "signs", "codes"),
    [
        ("Patchy airspace disease in the left lower lobe.", {"airspace disease"}, []),
        ("Right basilar consolidation.", {"consolidation"}, []),
        ("Bilateral lower lobe infiltrates.", {"infiltrate"}, []),
        ("Nodular opacity in the right midlung.", {"lung opacity"}, []),
        ("Hyperinflated lungs.", {"hyperinflation"}, []),
        ("Flattening of the hemidiaphragms.", {"hyperinflation"}, []),
        ("Calcified aortic knob.", {"aortic calcification"}, []),
        ("Mild left basilar volume loss.", {"volume loss"}, []),
        ("Biapical bullae.", {"bullae"}, []),
        # the diagnosis where the report asserts it, beside the sign
        ("Hyperinflated lungs consistent with COPD.", {"hyperinflation"}, ["J44.9"]),
        ("Right lower lobe consolidation consistent with pneumonia.", {"consolidation"}, ["J18.9"]),
        ("Atherosclerotic calcification of the aortic arch.", set(), ["I70.0"]),
        ("A 9 mm nodule in the left lower lobe.", {"lung nodule"}, ["R91.1"]),
    ],
)
def test_signs_stay_signs_unless_the_diagnosis_is_asserted(
    analyzer: Analyzer, text: str, signs: set[str], codes: list[str]
) -> None:
    res = analyzer.analyze(text)
    assert set(res.positive_signs) == signs
    assert res.icd10_positive == codes


@pytest.mark.parametrize(
    ("text", "concept", "expected"),
    [
        ("Probable small left effusion.", "pleural_effusion", "present"),  # "probable" commits, like "likely"
        ("Opacities most suggestive of pulmonary edema.", "pulmonary_edema", "present"),
        ("Findings strongly suggestive of pneumonia.", "pneumonia", "present"),
        ("Opacity suggestive of pneumonia.", "pneumonia", "uncertain"),
        ("Hyperexpanded lungs suggesting COPD.", "copd", "uncertain"),
        ("Malignancy cannot be confidently excluded.", "lung_cancer", "uncertain"),
        ("Opacity maybe due to pulmonary fibrosis.", "pulmonary_fibrosis", "uncertain"),
        ("Pneumonia is in the differential.", "pneumonia", "uncertain"),
        ("Please correlate clinically for pneumonia.", "pneumonia", "hypothetical"),
    ],
)  # fmt: skip
def test_graded_hedges(analyzer: Analyzer, text: str, concept: str, expected: str) -> None:
    assert status(analyzer, text).get(concept) == expected


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("Large left hydropneumothorax.", ["J94.8"]),  # ICD-10-CM: an inclusion term of J94.8
        ("Changes of cystic fibrosis.", ["E84.0"]),  # not pulmonary fibrosis (J84.1)
        ("Soft tissue edema of the chest wall.", []),  # not pulmonary edema
        ("Enlarging thyroid mass.", []),  # not a lung mass
        ("Sequela of old granulomatous infection.", []),  # not pneumonia
        ("Mild S-shaped curvature of the thoracic spine.", ["M41.9"]),
        ("Healing fracture of the right scapula.", ["S42.90XA"]),
    ],
)
def test_codes_follow_the_icd_classification(analyzer: Analyzer, text: str, codes: list[str]) -> None:
    assert analyzer.analyze(text).icd10_positive == codes


def test_fuzzy_matching_never_flips_hypo_and_hyper() -> None:
    assert fuzzy_concept("hypoinflated") is None
    assert fuzzy_concept("hyperinflatd") == "hyperinflation"


def test_sentence_level_context_matches_the_whole_document() -> None:
    """ConText runs per sentence (cached by sentence text and targets); the traits equal one run over the doc."""
    from medsearch_workers.nlp import assertion

    text = ("No pleural effusion or pneumothorax. Possible atelectasis versus pneumonia; the heart is enlarged. "
            "History of COPD. No pleural effusion or pneumothorax.")  # fmt: skip
    nlp, context = pipeline()
    sents = split_sentences(text)

    def fresh() -> tuple[object, list[object]]:
        doc = nlp.make_doc(text)
        assertion.set_sentence_starts(doc, sents)
        words = ["pleural effusion", "pneumothorax", "atelectasis", "pneumonia", "COPD"]
        spans, pos = [], 0
        for w in [*words, "pleural effusion", "pneumothorax"]:
            a = text.index(w, pos)
            spans.append(doc.char_span(a, a + len(w), label="X"))
            pos = a + len(w)
        return doc, spans

    doc, spans = fresh()
    doc.ents = spans
    context(doc)
    whole = [assertion.traits_of(e) for e in doc.ents]
    assert whole[0] == {"NEGATION"} and whole[4] == {"HISTORICAL"}
    assertion._sentence_cache.clear()
    doc, spans = fresh()
    assert assertion.span_traits(doc, spans) == whole
    assert len(assertion._sentence_cache) == 3  # the repeated sentence was computed once
    doc, spans = fresh()
    assert assertion.span_traits(doc, spans) == whole  # from the cache
