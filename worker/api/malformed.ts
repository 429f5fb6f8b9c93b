/**
 * Refuses requests that did not decode (proto/service.ts hands them over as a MalformedRequest
 * marker) with INVALID_ARGUMENT naming the problem, before any handler sees them.
 */
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServiceDefinition,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { MalformedRequest } from "../../proto/service.ts";
import { serviceError } from "./status.ts";

const refusal = (request: MalformedRequest) =>
  serviceError(status.INVALID_ARGUMENT, `malformed request: ${request.problem}`);

export function refuseMalformed(
  definition: ServiceDefinition,
  handlers: UntypedServiceImplementation,
): UntypedServiceImplementation {
  const wrapped: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    if (definition[name]?.responseStream) {
      const inner = handler as handleServerStreamingCall<unknown, unknown>;
      wrapped[name] = ((call) => {
        if (call.request instanceof MalformedRequest) call.emit("error", refusal(call.request));
        else inner(call);
      }) satisfies handleServerStreamingCall<unknown, unknown>;
    } else {
      const inner = handler as handleUnaryCall<unknown, unknown>;
      wrapped[name] = ((call, callback) => {
        if (call.request instanceof MalformedRequest) callback(refusal(call.request));
        else inner(call, callback);
      }) satisfies handleUnaryCall<unknown, unknown>;
    }
  }
  return wrapped;
}
