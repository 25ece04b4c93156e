package manifesttest

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Manifests are decoded the strict way: a misspelt field is an error, not
// a silently ignored setting.
func Example_decodeStrict() {
	var svc corev1.Service
	err := decodeStrict([]byte("apiVersion: v1\nkind: Service\nspec:\n  ports: [{port: 443, targetport: 8443}]\n"), &svc)
	fmt.Println(err != nil)
	err = decodeStrict([]byte("apiVersion: v1\nkind: Service\nspec:\n  ports: [{port: 443, targetPort: 8443}]\n"), &svc)
	fmt.Println(err, svc.Spec.Ports[0].TargetPort.IntValue())
	// Output:
	// true
	// <nil> 8443
}
