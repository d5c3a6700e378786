// Command ocfcloud is the one binary of ocfcloud: `serve` runs the cloud,
// `device-sim` runs a simulated OCF device, `version` prints the build. It
// parses flags into the packages' configs and nothing more.
package main
