// MhcPostCollapse (V4.1): the last boundary, y = MhcCollapse(MhcPost(x, residual,
// post_mix, comb_mix), pre_mix) (contract: shared/spec/mhc_ops.md, "MhcPostCollapse").
// Kernel call, plugin and creator.
#include "mhcV41.h"

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcPostCollapse";

// No attributes: any field passed to it is an error.
std::vector<FieldSpec> const kFIELDS = {};

// Inputs: x [T,d], residual [T,n,d], pre_mix, post_mix [T,n], comb_mix [T,n,n]. Output: y [T,d].
constexpr int32_t kNB_IN = 5;
constexpr int32_t kNB_OUT = 1;
constexpr int32_t kRESIDUAL = 1;

class MhcPostCollapsePlugin final : public MhcPlugin<MhcPostCollapsePlugin, kNB_IN, kNB_OUT, kRESIDUAL>
{
public:
    explicit MhcPostCollapsePlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT) || !v41TypesOk(kNAME, inputTypes[0], inputTypes[1]))
        {
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
            || !v41RanksOk(kNAME, inputs, {2, 3, 2, 2, 3},
                "x [T,d], residual [T,n,d], pre_mix [T,n], post_mix [T,n], comb_mix [T,n,n]")
            || !v41XOk(kNAME, inputs[0], inputs[kRESIDUAL]))
        {
            return -1;
        }
        v41SetDims(outputs[0], inputs[kRESIDUAL], "Td");
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        return v41FormatOk(pos, inOut, 0, {kRESIDUAL, kNB_IN}); // residual and y follow x
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        auto f = [&](int32_t i) { return static_cast<float const*>(c.inputs[i]); };
        mhcStatus_t const st = mhcPostCollapse(c.inputs[0], c.inputs[1], f(2), f(3), f(4), c.outputs[0], c.t, c.n, c.d,
            c.dtype, c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcPostCollapse", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostCollapseCreator() noexcept
{
    static MhcCreator<MhcPostCollapsePlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
