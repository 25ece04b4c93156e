package awsid

import "testing"

func TestRegionAndAccount(t *testing.T) {
	for s, want := range map[string]bool{"eu-west-1": true, "us-gov-west-1": true, "EU-WEST-1": false, "eu": false, "eu_west_1": false, "": false} {
		if Region(s) != want {
			t.Errorf("Region(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"111122223333": true, "11112222333": false, "11112222333a": false, "": false} {
		if Account(s) != want {
			t.Errorf("Account(%q) = %v", s, !want)
		}
	}
}
