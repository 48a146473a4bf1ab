"""Task folder lmms-eval adds to its search path for ``LMMS_EVAL_PLUGINS=zooprune.lmms_eval``.

lmms-eval's plugin mechanism requires ``<plugin>.tasks`` next to ``<plugin>.models``; this
package ships no tasks of its own (use lmms-eval's, or ``--include_path`` for custom ones).
"""
