"""Coverage-guided fuzzing (atheris/libFuzzer) of the parsers that read untrusted bytes.

``python -m benchmarks.fuzz --minutes N`` fuzzes every target of :mod:`benchmarks.fuzz.targets`
for N minutes in total, each in its own worker process (:mod:`benchmarks.fuzz.worker`), and reports
per target and in total: executions, coverage (libFuzzer's ``cov``/``ft`` over the instrumented
pyrauc and asn1crypto bytecode) and crashes. Seed corpora are made fresh by pyrauc and the test PKI
(:mod:`benchmarks.fuzz.seeds`); nothing binary is committed.

The contract under test: a parser raises only its module's own one-line error
(:class:`pyrauc.errors.RaucError` subclasses); any other exception, a hang (libFuzzer ``-timeout``)
or unbounded memory (``-rss_limit_mb``) is a crash, and its input is saved for a unit test.

This package imports no pyrauc module itself: the worker must import them under atheris'
instrumentation.
"""
