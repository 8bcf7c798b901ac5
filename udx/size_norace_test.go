//go:build !race

package udx

import "time"

const lossyDefault = 256 << 20

const interopDefault = 256 << 20

const interopLimit = 240 * time.Second

const raceOn = false
