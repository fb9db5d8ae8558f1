"""Operator reconciling MedicalSearchIndex resources."""
