package request

// SetFault makes r call f at each fault point, for the tests of this
// package.
func SetFault(r *Eraser, f func(point string) error) { r.fault = f }
