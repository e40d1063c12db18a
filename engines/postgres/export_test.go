package postgres

// Loops names the background loops e started, for the external tests.
func Loops(e *Engine) []string { return e.loops }

// SetLeaseSent makes e call f once each leasing statement is sent, before
// its results are read. Set it before any Receive.
func SetLeaseSent(e *Engine, f func(queue string)) { e.leaseSent = f }
