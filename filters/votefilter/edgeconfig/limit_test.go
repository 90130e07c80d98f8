package edgeconfig

import "testing"

// LimitCases are limits with the verdict of the one rule; other packages check that their
// input paths (environment, admin API) agree with it.
var LimitCases = []struct {
	Limit Limit
	OK    bool
}{
	{Limit{Max: 10, WindowSeconds: 60}, true},
	{Limit{Max: 1, WindowSeconds: 1}, true},
	{Limit{Max: 5, WindowSeconds: MaxWindowSeconds}, true},
	{Limit{Max: 0, WindowSeconds: 60}, true}, // disabled
	{Limit{}, true},                          // disabled, no window
	{Limit{Max: 5, WindowSeconds: 2 * MaxWindowSeconds}, false},
	{Limit{Max: 5, WindowSeconds: 0}, false},
	{Limit{Max: -1, WindowSeconds: 60}, false},
	{Limit{Max: 0, WindowSeconds: -1}, false},
}

func TestLimitValidate(t *testing.T) {
	for _, c := range LimitCases {
		if err := c.Limit.Validate(); (err == nil) != c.OK {
			t.Errorf("%+v: Validate = %v, want ok %v", c.Limit, err, c.OK)
		}
	}
}
