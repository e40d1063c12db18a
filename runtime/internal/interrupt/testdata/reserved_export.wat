;; reserved_export: a module exporting a name the pass reserves is refused.
(module (func (export "qrun:stop")))
