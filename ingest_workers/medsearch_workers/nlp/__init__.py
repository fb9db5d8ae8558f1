"""Radiology report NLP: sections, sentences, NER (lexicon | transformers), ConText assertion status,
ICD-10-CM linking and the per-report roll-up. Pure functions; nothing here touches the network."""

from medsearch_workers.nlp.analyzer import Analyzer, LexiconBackend, analyze_report, get_backend
from medsearch_workers.nlp.sections import split_sections, split_sentences
from medsearch_workers.nlp.types import Entity, IcdCandidate, Mention, ReportAnalysis, Section, Trait

__all__ = [
    "Analyzer",
    "Entity",
    "IcdCandidate",
    "LexiconBackend",
    "Mention",
    "ReportAnalysis",
    "Section",
    "Trait",
    "analyze_report",
    "get_backend",
    "split_sections",
    "split_sentences",
]
