def process_docs(docs):
    return docs
