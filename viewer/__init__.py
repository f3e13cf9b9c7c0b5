"""The diagnosis system (SPEC 4): a web viewer over LR storage, the hr-cache and on-demand SR."""
