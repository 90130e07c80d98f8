# Tracing: Jaeger all-in-one, the local trace backend that devstack starts when it is built
# (devstack/jaeger.go). It lives in its own module (tools/jaeger/go.mod pins v1.76.0) so its
# hundreds of dependencies stay out of the product's go.mod.
.PHONY: tools-tracing

EXTRA_TOOLS += tools-tracing

JAEGER_VERSION := 1.76.0

tools-tracing: $(TOOLS)/bin/jaeger
$(TOOLS)/bin/jaeger: tools/jaeger/go.mod tools/jaeger/go.sum
	cd tools/jaeger && GOBIN=$(CURDIR)/$(TOOLS)/bin $(GO) install github.com/jaegertracing/jaeger/cmd/jaeger
	@# The binary carries no version string of its own; its build info names the module's.
	$(GO) version -m $@ | grep -qE '^\s+mod\s+github.com/jaegertracing/jaeger\s+v$(JAEGER_VERSION)\b' || \
	  { echo "$@ is not jaeger v$(JAEGER_VERSION)"; exit 1; }
	touch $@
