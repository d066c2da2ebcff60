"""RAG over local documents: chunked Markdown in a hybrid index, a ``docs_search`` tool, and a
declared two-step plan (search, then a cited answer checked by the reviewer).

Run: ``python -m examples.rag "How long are backups kept?" [--docs DIR]``.
"""
