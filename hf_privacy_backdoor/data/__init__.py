"""Data: name lists, caption corpora, face sources and trigger builders."""
