"""DICOM networking: the C-STORE receiver, DICOMweb (STOW-RS parsing, QIDO/WADO pull) and de-identification.

Core code: imports no deployable. Every way in ends in :class:`medsearch.producer.Publisher`.
"""
