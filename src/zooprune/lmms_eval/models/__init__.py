"""lmms-eval's plugin hook: ``LMMS_EVAL_PLUGINS=zooprune.lmms_eval`` reads ``AVAILABLE_MODELS`` here.

lmms-eval imports ``zooprune.lmms_eval.models.<name>`` and takes the class named here, so this
file must not import lmms-eval itself.
"""

#: model name -> class name in the module of the same name.
AVAILABLE_MODELS = {"zooprune": "ZooPrune"}
