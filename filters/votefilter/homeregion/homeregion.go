// Package homeregion picks a viewer's home region: the one region of a multi-region fleet whose
// admission store decides on the viewer's vote and whose queue carries it, whichever region's
// edge the viewer reaches. One store per viewer is what lets a 200 mean "your counted vote"
// across regions without a global store on every vote's path.
//
// The home is the region the viewer's token names (a claim the identity provider sets from the
// viewer's profile, so only travellers cross regions), or else a pure function of the viewer
// id and the fleet's region names (rendezvous hashing), so every edge agrees without asking
// anyone. Neither may change while an election is open: a viewer whose home moves could be
// admitted once in each store (PostgreSQL would still keep one vote, and count the other as
// a conflict).
package homeregion

import (
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Pick returns claimed when it names one of regions, else Of(viewer, regions).
func Pick(claimed, viewer string, regions []string) string {
	if claimed != "" && slices.Contains(regions, claimed) {
		return claimed
	}
	return Of(viewer, regions)
}

// Of returns viewer's home among regions: the region with the highest hash of (region, viewer).
// The order of regions does not matter; adding or removing a region moves only the viewers it
// gains or had. Empty regions: "".
func Of(viewer string, regions []string) string {
	best, bestScore := "", uint64(0)
	for _, r := range regions {
		d := xxhash.New()
		_, _ = d.WriteString(r)
		_, _ = d.Write([]byte{0}) // region names hold no NUL: ("a", "b|c") and ("a|b", "c") differ
		_, _ = d.WriteString(viewer)
		if s := d.Sum64(); best == "" || s > bestScore || (s == bestScore && r < best) {
			best, bestScore = r, s
		}
	}
	return best
}
