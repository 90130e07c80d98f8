package homeregion

import (
	"fmt"
	"math"
	"testing"
)

func TestEveryEdgeAgreesWhateverTheOrder(t *testing.T) {
	for i := range 1000 {
		v := fmt.Sprintf("auth0|viewer-%d", i)
		a, b := Of(v, []string{"eu-west-1", "us-east-1", "ap-south-1"}), Of(v, []string{"ap-south-1", "eu-west-1", "us-east-1"})
		if a != b || a == "" {
			t.Fatalf("%s: home %q in one order, %q in another", v, a, b)
		}
	}
	if Of("v", nil) != "" || Of("v", []string{"only"}) != "only" {
		t.Fatal("no region must give no home, one region that region")
	}
}

func TestHomesSpreadEvenly(t *testing.T) {
	regions := []string{"eu-west-1", "us-east-1", "ap-south-1"}
	const n = 30000
	count := map[string]int{}
	for i := range n {
		count[Of(fmt.Sprintf("auth0|%d", i), regions)]++
	}
	for _, r := range regions {
		// 5 standard deviations of a binomial(n, 1/3): a skew this large is a broken hash.
		if d := math.Abs(float64(count[r]) - n/3.0); d > 5*math.Sqrt(n*(1.0/3)*(2.0/3)) {
			t.Errorf("%s is home to %d of %d viewers", r, count[r], n)
		}
	}
}

func TestAddingARegionMovesOnlyItsViewers(t *testing.T) {
	before := []string{"eu-west-1", "us-east-1"}
	after := append([]string{"ap-south-1"}, before...)
	moved := 0
	for i := range 10000 {
		v := fmt.Sprintf("auth0|%d", i)
		old, cur := Of(v, before), Of(v, after)
		if cur != old {
			if cur != "ap-south-1" {
				t.Fatalf("%s moved from %s to %s, not to the new region", v, old, cur)
			}
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("the new region is home to nobody")
	}
}

func TestAClaimedRegionOfTheFleetWins(t *testing.T) {
	regions := []string{"eu-west-1", "us-east-1"}
	for i := range 100 {
		v := fmt.Sprintf("auth0|%d", i)
		if Pick("us-east-1", v, regions) != "us-east-1" || Pick("eu-west-1", v, regions) != "eu-west-1" {
			t.Fatalf("%s: the claimed region was not taken", v)
		}
		// No claim, or one naming no region of the fleet: the hash decides.
		if Pick("", v, regions) != Of(v, regions) || Pick("ap-south-1", v, regions) != Of(v, regions) {
			t.Fatalf("%s: without a usable claim the home is not the hashed one", v)
		}
	}
}
