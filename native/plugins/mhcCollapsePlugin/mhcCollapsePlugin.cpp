// MhcCollapse (V4.1): layer_input[t,c] = sum_i pre_mix[t,i] * residual[t,i,c]
// (contract: shared/spec/mhc_ops.md, "MhcCollapse"). Kernel call, plugin and creator.
#include "mhcV41.h"

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcCollapse";

// No attributes: any field passed to it is an error.
std::vector<FieldSpec> const kFIELDS = {};

// Inputs: residual [T,n,d], pre_mix [T,n]. Output: layer_input [T,d].
constexpr int32_t kNB_IN = 2;
constexpr int32_t kNB_OUT = 1;

class MhcCollapsePlugin final : public MhcPlugin<MhcCollapsePlugin, kNB_IN, kNB_OUT, 0>
{
public:
    explicit MhcCollapsePlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (!isResidualType(inputTypes[0]))
        {
            logError(std::string(kNAME) + ": residual must be float32, float16 or bfloat16, got "
                + dataTypeName(inputTypes[0]));
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT)
            || !v41RanksOk(kNAME, inputs, {3, 2}, "residual [T,n,d], pre_mix [T,n]"))
        {
            return -1;
        }
        v41SetDims(outputs[0], inputs[0], "Td");
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        return v41FormatOk(pos, inOut, 0, {2}); // layer_input follows residual
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        mhcStatus_t const st = mhcCollapse(c.inputs[0], static_cast<float const*>(c.inputs[1]), c.outputs[0], c.t, c.n,
            c.d, c.dtype, c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcCollapse", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcCollapseCreator() noexcept
{
    static MhcCreator<MhcCollapsePlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
