package postgres

// Loops names the background loops e started, for the external tests.
func Loops(e *Engine) []string { return e.loops }
