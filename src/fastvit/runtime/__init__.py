"""What makes inference fast and portable: exact inference-only folds (:mod:`.folds`), the oneDNN
engine (:mod:`.onednn`), precision (:mod:`.precision`), batch splitting (:mod:`.batching`), the
:class:`~fastvit.runtime.predictor.Predictor` that ties them together, other runtimes
(:mod:`.backends`), export (:mod:`.export`), processes and devices (:mod:`.devices`) and the speed
comparison (:mod:`.benchmark`)."""
