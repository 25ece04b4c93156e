package imdstest_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/enclavekit/enclavekit/parent/imdstest"
)

// FuzzServeHTTP sends arbitrary methods, paths, TTL and token headers: the
// handler never panics, answers only the statuses IMDS uses, and never
// answers a GET with 200 without a token it issued.
func FuzzServeHTTP(f *testing.F) {
	f.Add("PUT", "/latest/api/token", "21600", "")
	f.Add("PUT", "/latest/api/token", "0", "")
	f.Add("PUT", "/latest/api/token", "99999999999999999999", "")
	f.Add("GET", "/latest/meta-data/iam/security-credentials/", "", "x")
	f.Add("GET", "/latest/meta-data/iam/security-credentials/"+imdstest.DefaultRole, "", "")
	f.Add("DELETE", "/", "1", "y")
	s, err := imdstest.New(imdstest.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	f.Fuzz(func(t *testing.T, method, path, ttl, token string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Method = method
		req.URL.Path = path
		req.Header.Set(imdstest.HeaderTokenTTL, ttl)
		if token != "" {
			req.Header.Set(imdstest.HeaderToken, token)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		switch w.Code {
		case 200, 400, 401, 403, 404, 405:
		default:
			t.Fatalf("status %d", w.Code)
		}
		if method == http.MethodGet && w.Code == 200 {
			t.Fatalf("GET %q answered 200 with token %q", path, token)
		}
	})
}
