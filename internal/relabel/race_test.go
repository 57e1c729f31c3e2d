//go:build race

package relabel

// raceEnabled is true under -race, where sync.Pool drops items on purpose and
// allocation counts say nothing about steady state.
const raceEnabled = true
