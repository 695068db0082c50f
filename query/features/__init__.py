"""The features question: which features drive a feature and which it drives (corpus-wide or in
one prompt), where it fires most, and its card."""
