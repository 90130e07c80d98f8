package envoymodule

/*
#cgo linux LDFLAGS: -Wl,--unresolved-symbols=ignore-all
#include <stdbool.h>
#include <stddef.h>

// The tracing callbacks of Envoy's dynamic-module ABI (abi.h), which the Go SDK at our pin does
// not wrap. Envoy resolves them when it loads the module; the layout of the buffer is abi.h's
// envoy_dynamic_module_type_envoy_buffer.
typedef struct {
  const char* ptr;
  size_t length;
} votefilter_envoy_buffer;

void* envoy_dynamic_module_callback_http_get_active_span(void* filter_envoy_ptr);
void envoy_dynamic_module_callback_http_span_set_sampled(void* span, bool sampled);
bool envoy_dynamic_module_callback_http_span_get_trace_id(void* span, votefilter_envoy_buffer* result);
bool envoy_dynamic_module_callback_http_span_get_span_id(void* span, votefilter_envoy_buffer* result);

// votefilter_span_ids sets the sampling decision of the stream's span and, for a sampled one,
// reads its ids: one call from Go for the whole exchange.
static int votefilter_span_ids(void* filter, bool sampled, votefilter_envoy_buffer* trace, votefilter_envoy_buffer* span_id) {
  void* span = envoy_dynamic_module_callback_http_get_active_span(filter);
  if (span == NULL) {
    return 0;
  }
  envoy_dynamic_module_callback_http_span_set_sampled(span, sampled);
  if (!sampled) {
    return 0;
  }
  if (!envoy_dynamic_module_callback_http_span_get_trace_id(span, trace)) {
    return 0;
  }
  // The trace id lives in a thread-local buffer that the next tracing callback reuses.
  static __thread char trace_copy[64];
  if (trace->length == 0 || trace->length > sizeof(trace_copy)) {
    return 0;
  }
  for (size_t i = 0; i < trace->length; i++) {
    trace_copy[i] = trace->ptr[i];
  }
  trace->ptr = trace_copy;
  return envoy_dynamic_module_callback_http_span_get_span_id(span, span_id) ? 1 : 0;
}
*/
import "C"

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"unsafe"

	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"
)

// sdkHandlePkg is the package of the SDK's real stream handle; any other handle (the SDK's
// fakes in tests) has no Envoy stream behind it.
const sdkHandlePkg = "github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/abi"

// sampled decides whether a vote is traced, percent in a hundred.
func sampled(percent float64) bool { return percent > 0 && rand.Float64()*100 < percent }

// traceParent makes the vote's span in Envoy sampled or not, and returns the W3C traceparent of
// a sampled one: "" for an unsampled vote, when Envoy does not trace, or when the handle is not
// Envoy's. The filter decides because the ABI can set a span's sampling but not read it, and
// the trace context goes on the vote's message only for a span that is exported (a link to a
// span that never is would be noise on every batch). The SDK keeps the stream's Envoy pointer
// unexported, so it is read by reflection, checked by package, name and kind so that an SDK
// change turns this off rather than crashing.
func traceParent(h shared.HttpFilterHandle, sampled bool) string {
	v := reflect.ValueOf(h)
	if !v.IsValid() || v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct ||
		v.Elem().Type().PkgPath() != sdkHandlePkg {
		return ""
	}
	f := v.Elem().FieldByName("hostPluginPtr")
	if !f.IsValid() || f.Kind() != reflect.UnsafePointer {
		return ""
	}
	ptr := *(*unsafe.Pointer)(unsafe.Pointer(f.UnsafeAddr()))
	if ptr == nil {
		return ""
	}
	var trace, span C.votefilter_envoy_buffer
	if C.votefilter_span_ids(ptr, C.bool(sampled), &trace, &span) == 0 {
		return ""
	}
	traceID := strings.ToLower(C.GoStringN(trace.ptr, C.int(trace.length)))
	spanID := strings.ToLower(C.GoStringN(span.ptr, C.int(span.length)))
	return formatTraceParent(traceID, spanID)
}

// formatTraceParent is the traceparent of a sampled span, "00-<trace>-<span>-01", or "" for ids
// that are not W3C's (Envoy's other tracers use other id formats; an all-zero id is invalid).
func formatTraceParent(traceID, spanID string) string {
	if !hexID(traceID, 32) || !hexID(spanID, 16) {
		return ""
	}
	return "00-" + traceID + "-" + spanID + "-01"
}

func hexID(s string, n int) bool {
	if len(s) != n || strings.Trim(s, "0") == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
