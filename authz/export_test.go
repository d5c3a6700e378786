package authz

// UseCheapPasswordHashing makes new password hashes cheap for the rest of
// the test binary. Verification reads the cost from each hash, so nothing
// else changes.
func UseCheapPasswordHashing() { argonCost.memoryKiB, argonCost.time = 64, 1 }

// setArgonCost sets the cost of new hashes and returns the previous one.
func setArgonCost(memKiB, t uint32) (uint32, uint32) {
	pm, pt := argonCost.memoryKiB, argonCost.time
	argonCost.memoryKiB, argonCost.time = memKiB, t
	return pm, pt
}
